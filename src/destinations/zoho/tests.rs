//! Unit tests of the parent module.

use super::*;
use crate::config::fields::FieldRule;
use crate::destinations::test_support::zoho_oauth as oauth;
use crate::event::{ChangeEvent, Op};
use crate::sink::Sink;
use crate::sink::crm::Ledgered;
use crate::sink::mapping::PropertyType;
use crate::sink::mapping::check_schema;
use crate::sink::test_support::{
    applied, apply_with_poison, as_update, assert_problem_paths, assert_update_keeps_the_record,
    batch, crm_config, emulator_fault as fault, emulator_state as state, event, fatal, mapped_rule,
    rejected, serve, transient,
};
use driftless_emulators::zoho::{Knobs, Options, router};

async fn start(opts: Options) -> String {
    serve(router(opts)).await
}

fn valid_sink(base_url: &str) -> ValidSink {
    let status = mapped_rule(
        "status",
        "Lead_Status",
        &[("new", "Not Contacted"), ("won", "Qualified")],
    );
    let mut email = FieldRule::new("email", "Email");
    email.transform = Some(crate::config::fields::Transform::Lowercase);
    let fields = vec![
        email,
        FieldRule::new("last_name", "Last_Name"),
        FieldRule::new("phone", "Phone"),
        FieldRule::new("employees", "No_of_Employees"),
        FieldRule::new("revenue", "Annual_Revenue"),
        FieldRule::new("opt_out", "Email_Opt_Out"),
        status,
    ];
    let kind = SinkKind::Zoho {
        module: "Leads".into(),
    };
    crm_config("leads", kind, fields, "Email", "ZOHO_TOKEN", base_url)
}

fn sink(base: &str) -> Ledgered<ZohoSink> {
    Ledgered::in_memory(
        ZohoSink::new(&valid_sink(base), oauth(base, "test-refresh-token")).unwrap(),
    )
}

fn lead(email: &str, last: &str) -> ChangeEvent {
    event(
        Op::Create,
        json!({"email": email, "last_name": last, "employees": "12", "revenue": "1500.50",
               "opt_out": "f", "status": "new"}),
    )
}

async fn leads(base: &str) -> Vec<Value> {
    state(base).await["records"]["Leads"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn values_are_encoded_as_typed_json() {
    // [data_type, value, encoded value or {"err": kind of value expected}]
    let cases = json!([
        ["integer", "42", 42],
        ["integer", 7, 7],
        ["integer", "4.5", {"err": "integer"}],
        ["double", "1500.50", 1500.5],
        ["currency", 3, 3],
        ["double", "NaN", {"err": "number"}],
        ["boolean", "t", true],
        ["boolean", false, false],
        ["boolean", "maybe", {"err": "boolean"}],
        ["date", "1815-12-10", "1815-12-10"],
        ["date", "2026-11-27T10:15:02Z", "2026-11-27"],
        ["date", "10/12/1815", {"err": "date"}],
        ["datetime", "2026-11-27T10:15:02.123456Z", "2026-11-27T10:15:02+00:00"],
        // The offset is kept.
        ["datetime", "2026-11-27T10:15:02+05:30", "2026-11-27T10:15:02+05:30"],
        // Timestamp without time zone: UTC.
        ["datetime", "2026-11-27 10:15:02.5", "2026-11-27T10:15:02+00:00"],
        ["datetime", "yesterday", {"err": "datetime"}],
        // BC and past-9999 values (capture keeps them as Postgres text) are refused, not cut.
        ["date", "0044-03-15 BC", {"err": "date"}],
        ["date", "4713-01-01 BC", {"err": "date"}],
        ["date", "10000-01-01", {"err": "date"}],
        ["date", "infinity", {"err": "date"}],
        ["date", "2026-11-27junk", {"err": "date"}],
        ["datetime", "0044-03-15 12:00:00+00 BC", {"err": "datetime"}],
        ["datetime", "4713-01-01 00:00:00 BC", {"err": "datetime"}],
        ["datetime", "10000-01-01 00:00:00+00", {"err": "datetime"}],
        ["datetime", "10000-01-01 00:00:00", {"err": "datetime"}],
        ["datetime", "9999-12-31 23:00:00-05", {"err": "datetime"}],
        ["datetime", "-infinity", {"err": "datetime"}],
        ["date", "0001-01-01", "0001-01-01"],
        ["datetime", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00"],
        ["multiselectpicklist", "a;b", ["a", "b"]],
        ["multiselectpicklist", [1, "x"], ["1", "x"]],
        ["lookup", 123, {"id": "123"}],
        ["text", 12.50, "12.5"],
        ["phone", "+1 555", "+1 555"],
        ["integer", null, null],
    ]);
    for case in cases.as_array().unwrap() {
        let (data_type, value) = (case[0].as_str().unwrap(), &case[1]);
        let expected = match case[2]["err"].as_str() {
            Some(kind) => Err(kind),
            None => Ok(case[2].clone()),
        };
        assert_eq!(encode_value(data_type, value), expected, "{case}");
    }
}

#[test]
fn records_apply_transforms_maps_and_types() {
    let types: BTreeMap<String, String> = [
        ("Email", "email"),
        ("Last_Name", "text"),
        ("No_of_Employees", "integer"),
        ("Annual_Revenue", "double"),
        ("Email_Opt_Out", "boolean"),
        ("Lead_Status", "picklist"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let rules = valid_sink("http://x").fields;
    let row = json!({"email": "Ada@X.io", "last_name": "Lovelace", "employees": "12",
        "revenue": "1500.50", "opt_out": "f", "status": "won", "phone": null});
    let rec = to_record(&rules, &types, row.as_object().unwrap()).unwrap();
    assert_eq!(
        Value::Object(rec),
        json!({"Email": "ada@x.io", "Last_Name": "Lovelace", "No_of_Employees": 12,
            "Annual_Revenue": 1500.5, "Email_Opt_Out": false, "Lead_Status": "Qualified",
            "Phone": null})
    );
    let bad = json!({"employees": "a dozen"});
    let e = to_record(&rules, &types, bad.as_object().unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "column employees: not a valid integer for property No_of_Employees"
    );
    let unmapped = json!({"status": "lost"});
    assert!(matches!(
        to_record(&rules, &types, unmapped.as_object().unwrap()),
        Err(MappingError::Unmapped { .. })
    ));
}

#[test]
fn requests_follow_api_domain_unless_base_url_is_pinned() {
    assert_eq!(
        request_base(false, ZOHO_BASE_URL, Some("https://www.zohoapis.eu/")),
        "https://www.zohoapis.eu"
    );
    assert_eq!(request_base(false, ZOHO_BASE_URL, None), ZOHO_BASE_URL);
    assert_eq!(
        request_base(true, "http://127.0.0.1:1", Some("https://www.zohoapis.eu")),
        "http://127.0.0.1:1"
    );
    let s = ZohoSink::new(&valid_sink(ZOHO_BASE_URL), "t".into()).unwrap();
    assert!(!s.pinned);
    let s = ZohoSink::new(&valid_sink("http://127.0.0.1:1/"), "t".into()).unwrap();
    assert!(s.pinned && s.crm.base_url == "http://127.0.0.1:1");
}

#[tokio::test]
async fn upsert_creates_then_updates_one_record_per_key_without_workflows() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    // Rows keyed by `id`: the update of row 1 spells its email in another case.
    let row = |id: u32, email: &str, name: &str| {
        let mut e = lead(email, name);
        e.after.as_mut().unwrap().insert("id".into(), json!(id));
        e
    };
    assert_update_keeps_the_record(
        &mut s,
        vec![row(1, "a@x.io", "Ada"), row(2, "b@x.io", "Bob")],
        as_update(row(1, "A@x.io", "Adele")),
    )
    .await;
    let recs = leads(&base).await;
    assert_eq!(recs.len(), 2);
    let a = recs.iter().find(|r| r["Email"] == "a@x.io").unwrap();
    assert_eq!(a["Last_Name"], "Adele");
    assert_eq!(a["No_of_Employees"], 12);
    assert_eq!(a["Annual_Revenue"], 1500.5);
    assert_eq!(a["Email_Opt_Out"], false);
    assert_eq!(a["Lead_Status"], "Not Contacted");
    let st = state(&base).await;
    assert_eq!(st["workflow_runs"], 0, "trigger: [] suppresses automation");
    let calls = st["write_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c["trigger"] == json!([]) && c["op"] == "upsert")
    );
}

#[tokio::test]
async fn deletes_remove_and_absent_deletes_succeed() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    s.apply(&batch(vec![lead("a@x.io", "Ada"), lead("b@x.io", "Bob")]))
        .await
        .unwrap();
    let del = |email: &str| event(Op::Delete, json!({"email": email}));
    let out = s
        .apply(&batch(vec![del("a@x.io"), del("ghost@x.io")]))
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    assert_eq!(out.destination_ids.len(), 1);
    assert_eq!(out.destination_ids[0].0, 0);
    let recs = leads(&base).await;
    let a = recs.iter().find(|r| r["Email"] == "a@x.io").unwrap();
    let b = recs.iter().find(|r| r["Email"] == "b@x.io").unwrap();
    assert_eq!(
        (a["$deleted"].clone(), b["$deleted"].clone()),
        (json!(true), json!(false))
    );
    // Replaying the delete is harmless.
    let out = s.apply(&batch(vec![del("a@x.io")])).await.unwrap();
    assert_eq!(out, Outcome::default());
    // on_delete = ignore sends nothing.
    let mut cfg = valid_sink(&base);
    cfg.on_delete = OnDelete::Ignore;
    let mut s = Ledgered::in_memory(ZohoSink::new(&cfg, "test-access-token".into()).unwrap());
    let before = state(&base).await["request_counts"].clone();
    let out = s.apply(&batch(vec![del("b@x.io")])).await.unwrap();
    assert_eq!(out, Outcome::default());
    assert_eq!(state(&base).await["request_counts"], before);
}

#[tokio::test]
async fn per_record_errors_are_rejected_while_others_apply() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    let no_last_name = event(Op::Create, json!({"email": "b@x.io"}));
    let bad_phone = event(
        Op::Create,
        json!({"email": "c@x.io", "last_name": "C", "phone": "call me"}),
    );
    let bad_int = event(
        Op::Create,
        json!({"email": "d@x.io", "last_name": "D", "employees": "many"}),
    );
    let poison = vec![no_last_name, bad_phone, bad_int];
    let out = apply_with_poison(&mut s, lead("a@x.io", "Ada"), poison).await;
    assert_eq!(
        rejected(&out),
        [
            (1, "MANDATORY_NOT_FOUND"),
            (2, "INVALID_DATA"),
            (3, "MAPPING")
        ]
    );
    assert!(out.rejected[1].message.contains("field Phone"), "{out:?}");
    assert!(
        !out.rejected[1].message.contains("call me"),
        "no row values"
    );
    assert_eq!(leads(&base).await.len(), 1);
}

#[tokio::test]
async fn whole_request_400_is_bisected_to_the_poison_record() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    s.types().await.unwrap();
    // Three whole-request 400s: [a b c d] → [a b] → [a] is poison; [b], [c d] apply.
    fault(&base, json!({"path": "/upsert", "status": 400, "count": 3})).await;
    let out = s
        .apply(&batch(vec![
            lead("a@x.io", "A"),
            lead("b@x.io", "B"),
            lead("c@x.io", "C"),
            lead("d@x.io", "D"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        out.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0]
    );
    assert_eq!(applied(&out), [1, 2, 3]);
    assert_eq!(leads(&base).await.len(), 3);
    let st = state(&base).await;
    assert_eq!(st["request_counts"]["POST /crm/v8/Leads/upsert"], 5);
}

#[tokio::test]
async fn concurrency_429_credits_and_5xx_are_transient() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    let b = batch(vec![lead("a@x.io", "Ada")]);
    fault(&base, json!({"path": "/upsert", "status": 429})).await;
    assert_eq!(transient(s.apply(&b).await).0, Some(CONCURRENCY_WAIT));
    fault(&base, json!({"path": "/upsert", "status": 503})).await;
    transient(s.apply(&b).await);
    fault(&base, json!({"path": "/upsert", "fail_after_write": true})).await;
    transient(s.apply(&b).await);
    let out = s.apply(&b).await.unwrap();
    assert_eq!(out.destination_ids.len(), 1);
    assert_eq!(
        leads(&base).await.len(),
        1,
        "the retry converged on one record"
    );

    // The real concurrency gate: another client holds the only slot of the token.
    let base = start(Options {
        concurrency_limit: 1,
        ..Options::default()
    })
    .await;
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&valid_sink(&base), "test-access-token".into()).unwrap());
    s.types().await.unwrap();
    let path = "/crm/v8/Leads";
    fault(
        &base,
        json!({"path": path, "method": "GET", "delay_ms": 800}),
    )
    .await;
    let slow = tokio::spawn(
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("Authorization", "Zoho-oauthtoken test-access-token")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (retry_after, message) = transient(s.apply(&b).await);
    assert_eq!(retry_after, Some(CONCURRENCY_WAIT));
    assert!(message.contains("concurrency"), "{message}");
    slow.await.unwrap().unwrap();
    assert_eq!(s.apply(&b).await.unwrap().destination_ids.len(), 1);
    assert_eq!(state(&base).await["rejected_429"], 1);

    // Credits: token refresh is free, fields + one upsert use the budget of 2. By default the
    // emulator answers spent credits like the concurrency gate: the waits double.
    let base = start(Options {
        knobs: Knobs {
            credits_per_day: 2,
            ..Knobs::default()
        },
        ..Options::default()
    })
    .await;
    let mut s = sink(&base);
    s.apply(&b).await.unwrap();
    // A later change (the same batch again would be stale: no request at all).
    let later = batch(vec![lead("a@x.io", "Ada again")]);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (retry_after, message) = transient(s.apply(&later).await);
        assert!(message.contains("credits are spent"), "{message}");
        waits.push(retry_after.unwrap());
    }
    assert_eq!(
        waits,
        [1, 2, 4].map(|n| CONCURRENCY_WAIT * n),
        "429s in a row double the wait"
    );
    // The other reading: LIMIT_REACHED is spent credits, waited out from CREDITS_WAIT.
    settings(&base, json!({"creditExhaustedBody": "limitReached"})).await;
    let (retry_after, message) = transient(s.apply(&later).await);
    assert!(message.contains("credits exhausted"), "{message}");
    assert_eq!(
        retry_after,
        Some(http::MAX_RETRY_AFTER),
        "the streak goes on (4th in a row: 8 × 10 min), up to the cap"
    );
    // Any other answer ends the streak.
    settings(&base, json!({"creditsPerDay": 100})).await;
    s.apply(&later).await.unwrap();
    settings(&base, json!({"creditsPerDay": 1})).await;
    let (retry_after, _) = transient(s.apply(&batch(vec![lead("a@x.io", "Ada 3")])).await);
    assert_eq!(retry_after, Some(CREDITS_WAIT));
}

async fn settings(base: &str, knobs: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_emulator/settings"))
        .json(&knobs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}

#[tokio::test]
async fn token_expiry_refreshes_and_converges() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    s.apply(&batch(vec![lead("a@x.io", "Ada")])).await.unwrap();
    fault(&base, json!({"path": "/upsert", "expire_tokens": true})).await;
    let e = as_update(lead("a@x.io", "Adele"));
    let out = s
        .apply(&batch(vec![e, lead("b@x.io", "Bob")]))
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    let recs = leads(&base).await;
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().any(|r| r["Last_Name"] == "Adele"));
    let st = state(&base).await;
    assert_eq!(st["request_counts"]["POST /oauth/v2/token"], 2);
    assert_eq!(st["request_counts"]["POST /crm/v8/Leads/upsert"], 3);

    // A static token that expires cannot be refreshed: fatal, pointing at OAuth.
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&valid_sink(&base), "test-access-token".into()).unwrap());
    fault(&base, json!({"expire_tokens": true})).await;
    let (_, hint) = fatal(s.apply(&batch(vec![lead("c@x.io", "C")])).await);
    assert!(hint.contains("[sinks.oauth]"), "{hint}");
}

#[tokio::test]
async fn bad_refresh_token_is_fatal_with_hint() {
    let base = start(Options::default()).await;
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&valid_sink(&base), oauth(&base, "revoked")).unwrap());
    let (message, hint) = fatal(s.apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(message.contains("invalid_code"), "{message}");
    assert!(hint.contains("ZOHO_REFRESH_TOKEN"), "{hint}");
    assert!(leads(&base).await.is_empty());
}

#[tokio::test]
async fn invalid_module_and_non_unique_id_property_are_fatal() {
    let base = start(Options::default()).await;
    let mut cfg = valid_sink(&base);
    cfg.kind = SinkKind::Zoho {
        module: "Leeds".into(),
    };
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&cfg, oauth(&base, "test-refresh-token")).unwrap());
    let (message, _) = fatal(s.apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(message.contains("Leeds"));
    let mut cfg = valid_sink(&base);
    cfg.id_property = Some("Last_Name".into());
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&cfg, oauth(&base, "test-refresh-token")).unwrap());
    let (_, hint) = fatal(s.apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(hint.contains("unique"), "{hint}");
}

#[tokio::test]
async fn schema_check_refuses_unknown_read_only_and_bad_picklist_fields() {
    let base = start(Options::default()).await;
    let mut s = sink(&base);
    let schema = s.fetch_schema().await.unwrap();
    assert!(schema["Email"].unique);
    assert!(!schema["Last_Name"].unique);
    assert!(schema["Created_Time"].read_only);
    assert_eq!(schema["No_of_Employees"].kind, PropertyType::Number);
    assert_eq!(schema["Lead_Status"].kind, PropertyType::Enumeration);
    assert!(schema["Lead_Status"].options.contains(&"Qualified".into()));
    let mut rules = valid_sink(&base).fields;
    assert!(check_schema("sinks[0]", &rules, "Email", &schema).is_empty());
    let bad_status = mapped_rule("status", "Lead_Status", &[("x", "Bogus")]);
    rules = vec![
        FieldRule::new("nope", "No_Such_Field"),
        FieldRule::new("created", "Created_Time"),
        bad_status,
    ];
    assert_problem_paths(
        &check_schema("sinks[0]", &rules, "First_Name", &schema),
        &[
            "sinks[0].id_property",
            "sinks[0].fields.nope",
            "sinks[0].fields.created",
            "sinks[0].fields.status",
        ],
    );
    // Accounts: the system duplicate-check field may be the id property.
    let mut cfg = valid_sink(&base);
    cfg.kind = SinkKind::Zoho {
        module: "Accounts".into(),
    };
    let mut s = ZohoSink::new(&cfg, "test-access-token".into()).unwrap();
    assert!(s.fetch_schema().await.unwrap()["Account_Name"].unique);
}

#[tokio::test]
async fn missing_scopes_are_fatal_naming_the_scope() {
    let granted = |scopes: &[&str]| Options {
        knobs: Knobs {
            granted_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Knobs::default()
        },
        ..Options::default()
    };
    let base = start(granted(&["ZohoCRM.modules.ALL", "ZohoCRM.coql.READ"])).await;
    let mut s = sink(&base);
    let (message, hint) = fatal(s.apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(
        message.contains("ZohoCRM.settings.fields.READ"),
        "{message}"
    );
    assert!(message.contains("OAUTH_SCOPE_MISMATCH"), "{message}");
    assert!(
        hint.contains("grant ZohoCRM.settings.fields.READ"),
        "{hint}"
    );
    assert!(hint.contains("ZOHO_REFRESH_TOKEN"), "{hint}");
    assert_eq!(
        state(&base).await["request_counts"]["POST /oauth/v2/token"],
        1,
        "a fresh token would not have the scope: no second refresh"
    );
    let base = start(granted(&[
        "ZohoCRM.modules.leads.READ",
        "ZohoCRM.settings.fields.READ",
        "ZohoCRM.coql.READ",
    ]))
    .await;
    let (message, _) = fatal(sink(&base).apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(message.contains("ZohoCRM.modules.Leads.ALL"), "{message}");
    let base = start(granted(&[
        "ZohoCRM.modules.ALL",
        "ZohoCRM.settings.fields.READ",
    ]))
    .await;
    let (message, _) = fatal(sink(&base).list().await);
    assert!(message.contains("ZohoCRM.coql.READ"), "{message}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_fatal_with_a_hint() {
    let base = start(Options::default()).await;
    let credentials = Credentials::oauth(
        "test-client-id".into(),
        "not-the-secret".into(),
        "test-refresh-token".into(),
        format!("{base}/oauth/v2/token"),
        "ZOHO_REFRESH_TOKEN",
    );
    let mut s = Ledgered::in_memory(ZohoSink::new(&valid_sink(&base), credentials).unwrap());
    let (message, hint) = fatal(s.apply(&batch(vec![lead("a@x.io", "Ada")])).await);
    assert!(message.contains("invalid_client_secret"), "{message}");
    assert!(hint.contains("client secret"), "{hint}");
    assert!(!message.contains("not-the-secret") && !hint.contains("not-the-secret"));
}

#[tokio::test]
async fn listing_quotes_reserved_field_names_and_pages() {
    let base = start(Options::default()).await;
    let mut cfg = valid_sink(&base);
    cfg.fields.push(FieldRule::new("ext", "External"));
    let mut s =
        Ledgered::in_memory(ZohoSink::new(&cfg, oauth(&base, "test-refresh-token")).unwrap());
    let mut e = lead("a@x.io", "Ada");
    e.after
        .as_mut()
        .unwrap()
        .insert("ext".into(), json!("outside"));
    s.apply(&batch(vec![e])).await.unwrap();
    let records = s.list().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].properties["External"], "outside");
    let st = state(&base).await;
    assert_eq!(st["records"]["Leads"][0]["External"], "outside");
    assert_eq!(st["request_counts"]["POST /crm/v8/coql"], 1);
    // More than a page: keyset by id, every record once.
    for chunk in 0..21 {
        let data: Vec<Value> = (0..100)
            .map(|i| json!({"Last_Name": format!("L{chunk}-{i}")}))
            .collect();
        let r = reqwest::Client::new()
            .post(format!("{base}/crm/v8/Leads"))
            .header("Authorization", "Zoho-oauthtoken test-access-token")
            .json(&json!({ "data": data }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let records = s.list().await.unwrap();
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!((records.len(), ids.len()), (2_101, 2_101));
    assert_eq!(state(&base).await["request_counts"]["POST /crm/v8/coql"], 3);
}

#[tokio::test]
async fn a_channel_left_subscribed_is_taken_over_by_the_next_start() {
    let base = start(Options::default()).await;
    let s = ZohoSink::new(&valid_sink(&base), oauth(&base, "test-refresh-token")).unwrap();
    let first = receiver::Channel::new("leads", "Leads", "http://127.0.0.1:9/first");
    receiver::watch_channel(&s, &first, true).await.unwrap();
    // A start after a crash: same id, new token; Zoho refuses to subscribe the id again.
    let second = receiver::Channel::new("leads", "Leads", "http://127.0.0.1:9/second");
    assert_eq!(first.id, second.id);
    receiver::watch_channel(&s, &second, true).await.unwrap();
    let st = state(&base).await;
    let channels = st["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["token"], second.token.as_str());
    assert_eq!(channels[0]["notify_url"], "http://127.0.0.1:9/second");
    assert_eq!(st["request_counts"]["POST /crm/v8/actions/watch"], 2);
    assert_eq!(st["request_counts"]["PUT /crm/v8/actions/watch"], 1);
}
