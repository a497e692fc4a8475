//! Tests of the Zoho emulator over HTTP.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::response::fmt_time;
use super::*;

async fn start(o: Options) -> String {
    crate::serve_for_test(router(o)).await
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn call(c: &reqwest::Client, m: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = c
        .request(m.parse().unwrap(), url)
        .header("Authorization", "Zoho-oauthtoken test-access-token");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    let t = resp.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

#[tokio::test]
async fn upsert_validation_trigger_delete() {
    let b = start(Options::default()).await;
    let c = client();
    let up = format!("{b}/crm/v8/Leads/upsert");
    let body = json!({"data": [{"Last_Name": "Boyle", "Email": "p@z.com"}],
        "duplicate_check_fields": ["Email"], "trigger": []});
    let (s, v) = call(&c, "POST", &up, Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["action"], "insert");
    let id = v["data"][0]["details"]["id"].as_str().unwrap().to_string();
    let mt = v["data"][0]["details"]["Modified_Time"].as_str().unwrap();
    assert!(mt.ends_with("+00:00") && mt.len() == 25);
    let body = json!({"data": [{"Last_Name": "Boyle2", "Email": "P@z.com"}],
        "duplicate_check_fields": ["Email"], "trigger": []});
    let (_, v) = call(&c, "POST", &up, Some(body)).await;
    assert_eq!(v["data"][0]["action"], "update");
    assert_eq!(v["data"][0]["duplicate_field"], "Email");
    assert_eq!(v["data"][0]["details"]["id"], id.as_str());
    // Mixed batch: order preserved, per-record errors.
    let body = json!({"data": [
        {"Last_Name": "A", "Email": "a@z.com"},
        {"Last_Name": "B", "Phone": 12},
        {"Email": "c@z.com"},
        {"Last_Name": "D", "Lead_Status": "Bogus"},
        {"Last_Name": "E", "Lead_Status": "Qualified"}]});
    let (s, v) = call(&c, "POST", &up, Some(body)).await;
    assert_eq!(s, 207);
    let d = &v["data"];
    assert_eq!(d[0]["code"], "SUCCESS");
    assert_eq!(d[1]["code"], "INVALID_DATA");
    assert_eq!(d[1]["details"]["api_name"], "Phone");
    assert_eq!(d[1]["details"]["expected_data_type"], "phone");
    assert_eq!(d[2]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(d[2]["details"]["api_name"], "Last_Name");
    assert_eq!(d[3]["code"], "INVALID_DATA");
    assert_eq!(d[3]["details"]["api_name"], "Lead_Status");
    assert_eq!(d[4]["code"], "SUCCESS");
    // Insert duplicate → DUPLICATE_DATA.
    let (s, v) = call(
        &c,
        "POST",
        &format!("{b}/crm/v8/Leads"),
        Some(json!({"data": [{"Last_Name": "X", "Email": "a@z.com"}]})),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["data"][0]["code"], "DUPLICATE_DATA");
    // >100 rejected.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"Last_Name": format!("n{i}")}))
        .collect();
    let (s, v) = call(&c, "POST", &up, Some(json!({"data": many}))).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("LIMIT_EXCEEDED")));
    // Workflow trigger bookkeeping.
    let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
    let calls = st["write_calls"].as_array().unwrap();
    assert_eq!(calls[0]["workflows_fired"], false);
    assert_eq!(calls[2]["workflows_fired"], true);
    // Read, delete, deleted feed.
    let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads/{id}"), None).await;
    assert_eq!(s, 200);
    let (s, v) = call(&c, "DELETE", &format!("{b}/crm/v8/Leads?ids={id}"), None).await;
    assert_eq!((s, v["data"][0]["code"].as_str()), (200, Some("SUCCESS")));
    let (s, v) = call(
        &c,
        "GET",
        &format!("{b}/crm/v8/Leads/deleted?type=all"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["id"], id.as_str());
    assert!(v["data"][0]["deleted_time"].is_string());
    let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads?fields=Email"), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads"), None).await;
    assert_eq!(s, 400);
    let (_, v) = call(
        &c,
        "GET",
        &format!("{b}/crm/v8/settings/fields?module=Leads"),
        None,
    )
    .await;
    let ln = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["api_name"] == "Last_Name");
    assert_eq!(ln.unwrap()["system_mandatory"], true);
}

#[tokio::test]
async fn coql_keyset_paging() {
    let b = start(Options::default()).await;
    let c = client();
    let data: Vec<Value> = (0..7)
        .map(|i| json!({"Last_Name": format!("n{i}")}))
        .collect();
    let (s, _) = call(
        &c,
        "POST",
        &format!("{b}/crm/v8/Contacts"),
        Some(json!({"data": data})),
    )
    .await;
    assert_eq!(s, 201);
    let (mut t, mut id) = ("2000-01-01T00:00:00+00:00".to_string(), "0".to_string());
    let mut seen = vec![];
    loop {
        let q = format!(
            "select Last_Name, Modified_Time from Contacts where (Modified_Time > '{t}' \
            or (Modified_Time = '{t}' and id > {id})) order by Modified_Time asc, id asc limit 3"
        );
        let (s, v) = call(
            &c,
            "POST",
            &format!("{b}/crm/v8/coql"),
            Some(json!({"select_query": q})),
        )
        .await;
        if s == 204 {
            break;
        }
        assert_eq!(s, 200);
        for r in v["data"].as_array().unwrap() {
            seen.push(r["Last_Name"].as_str().unwrap().to_string());
            t = r["Modified_Time"].as_str().unwrap().into();
            id = r["id"].as_str().unwrap().into();
        }
        if v["info"]["more_records"] == false {
            break;
        }
    }
    assert_eq!(seen.len(), 7);
    let q = json!({"select_query": "select Last_Name from Contacts where Modified_Time > '2000-01-01T00:00:00+00:00' and id > 1 limit 2, 2"});
    let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
    assert_eq!((s, v["info"]["count"].as_u64()), (200, Some(2)));
    let q = json!({"select_query": "select from Contacts"});
    let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("SYNTAX_ERROR")));
    let q = json!({"select_query": "select Last_Name from Contacts limit 2001"});
    let (s, _) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn auth_limits_and_faults() {
    let b = start(Options {
        knobs: Knobs {
            credits_per_day: 40,
            ..Knobs::default()
        },
        concurrency_limit: 3,
        ..Options::default()
    })
    .await;
    let c = client();
    let lead = format!("{b}/crm/v8/Leads?fields=Email");
    let r = c
        .get(&lead)
        .header("Authorization", "Bearer test-access-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Fault 500 then success; fail-after-write.
    call(
        &c,
        "POST",
        &format!("{b}/_emulator/faults"),
        Some(json!({"path": "/Leads", "status": 500})),
    )
    .await;
    assert_eq!(call(&c, "GET", &lead, None).await.0, 500);
    assert_eq!(call(&c, "GET", &lead, None).await.0, 204);
    call(
        &c,
        "POST",
        &format!("{b}/_emulator/faults"),
        Some(json!({"path": "/Leads", "fail_after_write": true})),
    )
    .await;
    let (s, _) = call(
        &c,
        "POST",
        &format!("{b}/crm/v8/Leads"),
        Some(json!({"data": [{"Last_Name": "W"}]})),
    )
    .await;
    assert_eq!(s, 500);
    let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
    assert_eq!(st["records"]["Leads"].as_array().unwrap().len(), 1);
    // Concurrency cap.
    call(
        &c,
        "POST",
        &format!("{b}/_emulator/faults"),
        Some(json!({"path": "/Leads", "delay_ms": 400, "count": 6})),
    )
    .await;
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let (c, u) = (c.clone(), lead.clone());
            tokio::spawn(async move { call(&c, "GET", &u, None).await.0 })
        })
        .collect();
    let mut codes = vec![];
    for h in hs {
        codes.push(h.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|s| **s == 429).count(), 3, "{codes:?}");
    // Token expiry then refresh.
    call(
        &c,
        "POST",
        &format!("{b}/_emulator/faults"),
        Some(json!({"expire_tokens": true})),
    )
    .await;
    assert_eq!(
        call(&c, "GET", &lead, None).await.1["code"],
        "INVALID_TOKEN"
    );
    let tok: Value = c.post(format!("{b}/oauth/v2/token?grant_type=refresh_token&client_id=test-client-id&client_secret=test-client-secret&refresh_token=test-refresh-token"))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    let at = tok["access_token"].as_str().unwrap();
    let r = c
        .get(&lead)
        .header("Authorization", format!("Zoho-oauthtoken {at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Credits exhausted.
    let mut last = 0;
    for _ in 0..40 {
        last = c
            .get(&lead)
            .header("Authorization", format!("Zoho-oauthtoken {at}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn notifications_and_expiry() {
    let got = Arc::new(Mutex::new(Vec::<Value>::new()));
    let g2 = got.clone();
    let recv = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let g = g2.clone();
            async move {
                g.lock().unwrap().push(v);
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook?src=t", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, recv).await.unwrap() });
    let b = start(Options::default()).await;
    let c = client();
    let w = json!({"watch": [{"channel_id": 1000, "events": ["Leads.all"], "notify_url": hook, "token": "tk"}]});
    let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/actions/watch"), Some(w)).await;
    assert_eq!((s, v["watch"][0]["code"].as_str()), (200, Some("SUCCESS")));
    call(
        &c,
        "POST",
        &format!("{b}/crm/v8/Leads"),
        Some(json!({"data": [{"Last_Name": "N"}]})),
    )
    .await;
    for _ in 0..50 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = got.lock().unwrap()[0].clone();
    assert_eq!(
        (
            n["operation"].as_str(),
            n["token"].as_str(),
            n["module"].as_str()
        ),
        (Some("insert"), Some("tk"), Some("Leads"))
    );
    assert_eq!(n["query_params"]["src"], "t");
    // Expiry beyond max → default 1 h; past expiry → channel dropped, no callback.
    {
        let app_state = call(&c, "GET", &format!("{b}/_emulator/state"), None)
            .await
            .1;
        assert_eq!(app_state["notifications"].as_array().unwrap().len(), 1);
    }
    let far = fmt_time(Utc::now() + chrono::Duration::days(7));
    let w =
        json!({"watch": [{"channel_id": 1000, "events": ["Leads.all"], "channel_expiry": far}]});
    let (_, v) = call(&c, "PATCH", &format!("{b}/crm/v8/actions/watch"), Some(w)).await;
    let exp = v["watch"][0]["details"]["events"][0]["channel_expiry"]
        .as_str()
        .unwrap();
    let exp = DateTime::parse_from_rfc3339(exp)
        .unwrap()
        .with_timezone(&Utc);
    assert!(exp <= Utc::now() + chrono::Duration::hours(1) + chrono::Duration::seconds(2));
}

async fn coql(c: &reqwest::Client, b: &str, q: &str) -> (u16, Value) {
    let body = json!({ "select_query": q });
    call(c, "POST", &format!("{b}/crm/v8/coql"), Some(body)).await
}

async fn settings(c: &reqwest::Client, b: &str, knobs: Value) -> u16 {
    call(c, "POST", &format!("{b}/_emulator/settings"), Some(knobs))
        .await
        .0
}

#[tokio::test]
async fn coql_groups_criteria_in_pairs_quotes_reserved_words_and_caps_in() {
    let b = start(Options::default()).await;
    let c = client();
    let leads = json!({"data": [{"Last_Name": "A", "Email": "a@z.com"}, {"Last_Name": "B"}]});
    call(&c, "POST", &format!("{b}/crm/v8/Leads"), Some(leads)).await;
    let three = "select Last_Name from Leads where id is not null and Last_Name = 'A' \
                 and Email is not null";
    let (s, v) = coql(&c, &b, three).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("SYNTAX_ERROR")), "{v}");
    let mixed = "select Last_Name from Leads where Last_Name = 'A' or Last_Name = 'B' and \
                 id is not null";
    assert_eq!(coql(&c, &b, mixed).await.0, 400);
    for grouped in [
        "select Last_Name from Leads where ((id is not null and Last_Name = 'A') and \
         Email is not null)",
        "select Last_Name from Leads where (id is not null and Last_Name = 'A') and \
         Email is not null",
        "select Last_Name from Leads where id is not null and (Last_Name = 'A' and \
         Email is not null)",
    ] {
        let (s, v) = coql(&c, &b, grouped).await;
        assert_eq!(s, 200, "{grouped}: {v}");
        assert_eq!(
            v["data"],
            json!([{"Last_Name": "A", "id": v["data"][0]["id"]}])
        );
    }
    let (s, v) = coql(
        &c,
        &b,
        "select Last_Name from Leads where id is not null and Last_Name = 'B'",
    )
    .await;
    assert_eq!(
        (s, v["info"]["count"].as_u64()),
        (200, Some(1)),
        "two criteria need no group"
    );
    // Reserved words name fields only quoted, either way.
    let (s, v) = coql(&c, &b, "select External from Leads where id is not null").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("SYNTAX_ERROR")), "{v}");
    let (s, v) = coql(&c, &b, "select id from Leads where 'Email' = 'a@z.com'").await;
    assert_eq!((s, v["info"]["count"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = coql(
        &c,
        &b,
        "select \"Email\" from Leads where \"Last_Name\" = 'A'",
    )
    .await;
    assert_eq!(
        (s, v["data"][0]["Email"].as_str()),
        (200, Some("a@z.com")),
        "{v}"
    );
    // At most 50 values per `in`.
    let values = |n: usize| {
        (0..n)
            .map(|i| format!("'v{i}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let q = |n| {
        format!(
            "select id from Leads where Last_Name in ({}, 'A')",
            values(n)
        )
    };
    assert_eq!(coql(&c, &b, &q(49)).await.0, 200);
    let (s, v) = coql(&c, &b, &q(50)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("LIMIT_EXCEEDED")),
        "{v}"
    );
    // The lenient readings, by knob.
    let knobs =
        json!({"coqlPairGrouping": false, "coqlReservedWords": false, "coqlMaxInValues": 100});
    assert_eq!(settings(&c, &b, knobs).await, 204);
    assert_eq!(coql(&c, &b, three).await.0, 200);
    assert_eq!(coql(&c, &b, &q(50)).await.0, 200);
    let (s, v) = coql(
        &c,
        &b,
        "select id from Leads where Last_Name = 'A' or Last_Name = 'B' and id is null",
    )
    .await;
    assert_eq!(
        (s, v["info"]["count"].as_u64()),
        (200, Some(1)),
        "and binds tighter: {v}"
    );
}

#[tokio::test]
async fn settings_are_checked_and_survive_a_reset() {
    let b = start(Options::default()).await;
    let c = client();
    let url = format!("{b}/_emulator/settings");
    let (s, v) = call(&c, "GET", &url, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["creditExhaustedBody"], "tooManyRequests");
    assert_eq!(v["duplicateChannelId"], "refuse");
    assert_eq!(v["coqlMaxInValues"], 50);
    assert_eq!(settings(&c, &b, json!({"noSuchKnob": 1})).await, 400);
    assert_eq!(
        settings(&c, &b, json!({"creditsPerDay": "many"})).await,
        400
    );
    assert_eq!(settings(&c, &b, json!([1])).await, 400);
    assert_eq!(settings(&c, &b, json!({"creditsPerDay": 7})).await, 204);
    call(&c, "POST", &format!("{b}/_emulator/reset"), None).await;
    let (_, v) = call(&c, "GET", &url, None).await;
    assert_eq!(v["creditsPerDay"], 7);
    assert_eq!(v["coqlPairGrouping"], true, "the others kept their values");
}

#[tokio::test]
async fn exhausted_credits_answer_by_the_knob() {
    let b = start(Options::default()).await;
    let c = client();
    let lead = format!("{b}/crm/v8/Leads?fields=Email");
    assert_eq!(settings(&c, &b, json!({"creditsPerDay": 1})).await, 204);
    assert_eq!(call(&c, "GET", &lead, None).await.0, 204);
    let (s, v) = call(&c, "GET", &lead, None).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")));
    assert_eq!(
        v["details"],
        json!({}),
        "nothing tells it from the concurrency gate"
    );
    let knob = json!({"creditExhaustedBody": "limitReached"});
    assert_eq!(settings(&c, &b, knob).await, 204);
    let (s, v) = call(&c, "GET", &lead, None).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("LIMIT_REACHED")));
}

#[tokio::test]
async fn oauth_checks_client_and_scopes_per_token() {
    let b = start(Options::default()).await;
    let c = client();
    let mint = |id: &str, secret: &str| {
        let url = format!(
            "{b}/oauth/v2/token?grant_type=refresh_token&client_id={id}&client_secret={secret}\
             &refresh_token=test-refresh-token"
        );
        let c = c.clone();
        async move {
            c.post(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        mint("nope", "test-client-secret").await["error"],
        "invalid_client"
    );
    assert_eq!(
        mint("test-client-id", "nope").await["error"],
        "invalid_client_secret"
    );
    let full = mint("test-client-id", "test-client-secret").await;
    assert!(
        full["scope"]
            .as_str()
            .unwrap()
            .contains("ZohoCRM.coql.READ")
    );
    let narrow =
        json!({"grantedScopes": ["ZohoCRM.modules.leads.READ", "ZohoCRM.settings.fields.READ"]});
    assert_eq!(settings(&c, &b, narrow).await, 204);
    let token = mint("test-client-id", "test-client-secret").await;
    assert_eq!(
        token["scope"],
        "ZohoCRM.modules.leads.READ ZohoCRM.settings.fields.READ"
    );
    let as_token = |t: &Value, m: &str, path: &str, body: Option<Value>| {
        let mut r = c.request(m.parse().unwrap(), format!("{b}{path}")).header(
            "Authorization",
            format!("Zoho-oauthtoken {}", t["access_token"].as_str().unwrap()),
        );
        if let Some(body) = body {
            r = r.json(&body);
        }
        async move {
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let write = json!({"data": [{"Last_Name": "W"}]});
    let coql = json!({"select_query": "select id from Leads where id is not null"});
    assert_eq!(
        as_token(&token, "GET", "/crm/v8/Leads?fields=Email", None)
            .await
            .0,
        204
    );
    assert_eq!(
        as_token(&token, "GET", "/crm/v8/settings/fields?module=Leads", None)
            .await
            .0,
        200
    );
    for (m, path, body) in [
        ("POST", "/crm/v8/Leads", Some(write.clone())),
        ("GET", "/crm/v8/Contacts?fields=Email", None),
        ("POST", "/crm/v8/coql", Some(coql.clone())),
        ("GET", "/crm/v8/actions/watch", None),
    ] {
        let (s, v) = as_token(&token, m, path, body).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("OAUTH_SCOPE_MISMATCH")),
            "{m} {path}"
        );
    }
    // A token keeps the scopes it was minted with; the configured token follows the knob.
    assert_eq!(
        as_token(&full, "POST", "/crm/v8/Leads", Some(write))
            .await
            .0,
        201
    );
    assert_eq!(
        as_token(&full, "POST", "/crm/v8/coql", Some(coql.clone()))
            .await
            .0,
        200
    );
    let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(coql)).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("OAUTH_SCOPE_MISMATCH")));
}

#[tokio::test]
async fn a_subscribed_channel_id_is_refused_and_updated_instead() {
    let b = start(Options::default()).await;
    let c = client();
    let url = format!("{b}/crm/v8/actions/watch");
    let w = |token: &str| {
        json!({"watch": [{"channel_id": 7, "events": ["Leads.all"],
            "notify_url": "http://127.0.0.1:9/hook", "token": token}]})
    };
    assert_eq!(call(&c, "POST", &url, Some(w("one"))).await.0, 200);
    let (s, v) = call(&c, "POST", &url, Some(w("two"))).await;
    assert_eq!(s, 400);
    assert_eq!(v["watch"][0]["code"], "DUPLICATE_DATA");
    assert_eq!(v["watch"][0]["details"]["api_name"], "channel_id");
    let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
    assert_eq!(st["channels"][0]["token"], "one", "the old channel stands");
    assert_eq!(call(&c, "PUT", &url, Some(w("two"))).await.0, 200);
    let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
    assert_eq!(st["channels"][0]["token"], "two");
    let knob = json!({"duplicateChannelId": "replace"});
    assert_eq!(settings(&c, &b, knob).await, 204);
    assert_eq!(call(&c, "POST", &url, Some(w("three"))).await.0, 200);
    let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
    assert_eq!(st["channels"].as_array().unwrap().len(), 1);
    assert_eq!(st["channels"][0]["token"], "three");
}
