//! Tests of the HubSpot emulator's API, limits, faults and test-control routes over HTTP.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use chrono::Utc;
use serde_json::{Value, json};

use super::response::empty;
use super::schema::{is_unique, to_ms};
use super::state::{Inner, Shared};
use super::*;

mod knobs;
mod webhooks;

struct Emu {
    base: String,
    client: reqwest::Client,
    token: String,
}

async fn start(opts: Options) -> Emu {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Emu {
        base: crate::serve_for_test(router(opts)).await,
        client: reqwest::Client::builder().build().unwrap(),
        token: "test-token".into(),
    }
}

impl Emu {
    async fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .client
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, v)
    }

    async fn upsert(&self, t: &str, inputs: Value) -> (u16, Value) {
        let (s, _, v) = self
            .req(
                "POST",
                &format!("/crm/v3/objects/{t}/batch/upsert"),
                Some(json!({"inputs": inputs})),
            )
            .await;
        (s, v)
    }

    async fn faults(&self, f: Value) {
        let (s, _, _) = self.req("POST", "/_emulator/faults", Some(f)).await;
        assert_eq!(s, 200);
    }
}

fn contact(email: &str, first: &str) -> Value {
    json!({"idProperty": "email", "id": email, "properties": {"firstname": first}})
}

#[tokio::test]
async fn h1_auth_missing_invalid_and_expired() {
    let mut emu = start(Options::default()).await;
    emu.token = "nope".into();
    let (s, h, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["category"], "INVALID_AUTHENTICATION");
    assert_eq!(v["status"], "error");
    assert!(h.contains_key("x-hubspot-correlation-id"));
    emu.token = "test-token".into();
    emu.faults(json!({"expire_tokens": true})).await;
    let (s, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["category"], "EXPIRED_AUTHENTICATION");
    assert!(v["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn h2_oauth_refresh_issues_expiring_tokens() {
    let opts = Options {
        oauth_token_ttl: Duration::from_millis(1500),
        ..Options::default()
    };
    let mut emu = start(opts).await;
    let r = emu
        .client
        .post(format!("{}/oauth/v1/token", emu.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            "grant_type=refresh_token&client_id=test-client-id&client_secret=test-client-secret&\
             refresh_token=test-refresh-token",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_in"].as_u64(), Some(1));
    emu.token = v["access_token"].as_str().unwrap().into();
    let (s, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 200);
    assert!(h.contains_key("x-hubspot-ratelimit-max"));
    assert!(
        !h.contains_key("x-hubspot-ratelimit-daily"),
        "OAuth omits daily headers"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (s, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["category"], "EXPIRED_AUTHENTICATION");
    let r = emu
        .client
        .post(format!("{}/oauth/v3/token", emu.base))
        .body("grant_type=refresh_token&refresh_token=bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn h3_ten_secondly_429_and_recovery() {
    let opts = Options {
        burst_limit: 3,
        burst_window: Duration::from_millis(800),
        ..Options::default()
    };
    let emu = start(opts).await;
    for i in 0..3 {
        let (s, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 200);
        assert_eq!(
            h["x-hubspot-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let (s, h, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 429);
    assert_eq!(v["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(v["errorType"], "RATE_LIMIT");
    assert_eq!(v["status"], "error");
    assert!(v["correlationId"].is_string());
    assert_eq!(h["x-hubspot-ratelimit-remaining"], "0");
    assert_eq!(h["x-hubspot-ratelimit-max"], "3");
    assert_eq!(h["x-hubspot-ratelimit-interval-milliseconds"], "800");
    tokio::time::sleep(Duration::from_millis(850)).await;
    let (s, _, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(s, 200);
    let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
    assert_eq!(st["requests"]["rateLimited"].as_u64(), Some(1));
    assert!(st["requests"]["maxInAnyWindow"].as_u64().unwrap() >= 4);
}

#[tokio::test]
async fn h4_daily_cap() {
    let emu = start(Options {
        daily_limit: 2,
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(emu.req("GET", "/crm/v3/objects/deals", None).await.0, 200);
    }
    let (s, h, v) = emu.req("GET", "/crm/v3/objects/deals", None).await;
    assert_eq!(s, 429);
    assert_eq!(v["policyName"], "DAILY");
    assert_eq!(v["message"], "You have reached your daily limit.");
    assert_eq!(h["x-hubspot-ratelimit-daily-remaining"], "0");
}

#[tokio::test]
async fn h5_rate_limit_headers() {
    let emu = start(Options::default()).await;
    let (_, h, _) = emu.req("GET", "/crm/v3/objects/companies", None).await;
    assert_eq!(h["x-hubspot-ratelimit-max"], "100");
    assert_eq!(h["x-hubspot-ratelimit-remaining"], "99");
    assert_eq!(h["x-hubspot-ratelimit-interval-milliseconds"], "10000");
    assert_eq!(h["x-hubspot-ratelimit-daily"], "250000");
    assert_eq!(h["x-hubspot-ratelimit-daily-remaining"], "249999");
    assert!(h.contains_key("x-hubspot-correlation-id"));
}

#[tokio::test]
async fn h6_search_secondly_limit_without_headers() {
    let emu = start(Options {
        search_per_second: 2,
        ..Options::default()
    })
    .await;
    let body = json!({"limit": 10});
    for _ in 0..2 {
        let (s, h, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/search",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 200);
        assert!(!h.contains_key("x-hubspot-ratelimit-max"));
    }
    let (s, _, v) = emu
        .req("POST", "/crm/v3/objects/contacts/search", Some(body))
        .await;
    assert_eq!(s, 429);
    assert_eq!(v["message"], "You have reached your secondly limit.");
    let (_, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert_eq!(
        h["x-hubspot-ratelimit-remaining"], "99",
        "search not in the 10 s bucket"
    );
}

#[tokio::test]
async fn h7_batch_limits() {
    let emu = start(Options::default()).await;
    let inputs: Vec<Value> = (0..101)
        .map(|i| contact(&format!("u{i}@x.io"), "A"))
        .collect();
    let (s, v) = emu.upsert("contacts", json!(inputs)).await;
    assert_eq!(s, 400);
    assert_eq!(v["category"], "VALIDATION_ERROR");
    let (s, _) = emu.upsert("contacts", json!(inputs[..100])).await;
    assert_eq!(s, 200);
    let ids: Vec<Value> = (0..51).map(|i| json!({"id": i.to_string()})).collect();
    let (s, _, v) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": ids, "propertiesWithHistory": ["firstname"]})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("property histories is 50")
    );
}

#[tokio::test]
async fn h8_batch_create_conflict_and_multistatus() {
    let emu = start(Options::default()).await;
    emu.upsert("contacts", json!([contact("a@x.io", "A")]))
        .await;
    let path = "/crm/v3/objects/contacts/batch/create";
    let mk = |e: &str, tr: Option<&str>| {
        let mut v = json!({"properties": {"email": e}});
        if let Some(tr) = tr {
            v["objectWriteTraceId"] = json!(tr);
        }
        v
    };
    let (s, _, v) = emu
        .req(
            "POST",
            path,
            Some(json!({"inputs": [mk("b@x.io", None), mk("a@x.io", None)]})),
        )
        .await;
    assert_eq!(s, 409);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Contact already exists. Existing ID:")
    );
    let inputs = json!([mk("b@x.io", Some("t1")), mk("a@x.io", Some("t2"))]);
    let (s, _, v) = emu
        .req("POST", path, Some(json!({ "inputs": inputs })))
        .await;
    assert_eq!(s, 207);
    assert_eq!(v["numErrors"].as_u64(), Some(1));
    assert_eq!(v["results"][0]["objectWriteTraceId"], "t1");
    assert_eq!(v["errors"][0]["context"]["objectWriteTraceId"][0], "t2");
}

#[tokio::test]
async fn h9_upsert_creates_then_updates_and_partial_207() {
    let emu = start(Options {
        batch_invalid_input: BatchInvalidInput::MultiStatus207,
        ..Options::default()
    })
    .await;
    let (s, v) = emu
        .upsert("contacts", json!([contact("jane@x.io", "Jane")]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "COMPLETE");
    assert!(v["completedAt"].is_string());
    let r = &v["results"][0];
    assert_eq!(r["new"], true);
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["properties"]["hs_object_id"], id.as_str());
    assert!(r["properties"]["lastmodifieddate"].is_string());
    assert_eq!(r["archived"], false);
    let (s, v) = emu
        .upsert("contacts", json!([contact("jane@x.io", "Janet")]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["results"][0]["new"], false);
    assert_eq!(v["results"][0]["id"], id.as_str());
    assert_eq!(v["results"][0]["properties"]["firstname"], "Janet");
    let bad = json!({"idProperty": "email", "id": "b@x.io", "properties": {"nope": "1"}});
    let (s, v) = emu
        .upsert("contacts", json!([contact("c@x.io", "C"), bad]))
        .await;
    assert_eq!(s, 207);
    assert_eq!(v["numErrors"].as_u64(), Some(1));
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(v["errors"][0]["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    // Versioned prefix is served by the same handlers; create answers 201.
    let (s, _, v) = emu
        .req(
            "POST",
            "/crm/objects/2026-03/contacts",
            Some(json!({"properties": {"email": "d@x.io"}})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["properties"]["email"], "d@x.io");
}

#[tokio::test]
async fn h10_id_property_must_be_unique() {
    let emu = start(Options::default()).await;
    let inp = json!([{"idProperty": "firstname", "id": "x", "properties": {}}]);
    let (s, v) = emu.upsert("contacts", inp).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["message"],
        "Unable to perform update/upsert by non-unique 0-1 property firstname"
    );
    let inp = json!([{"idProperty": "email", "id": "x", "properties": {}}]);
    let (s, v) = emu.upsert("companies", inp).await;
    assert_eq!(s, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("0-2 property email")
    );
    let inp = json!([{"idProperty": "pg_external_id", "id": "42", "properties": {"name": "Acme"}}]);
    let (s, v) = emu.upsert("companies", inp).await;
    assert_eq!(s, 200);
    assert_eq!(v["results"][0]["properties"]["pg_external_id"], "42");
}

#[tokio::test]
async fn h11_duplicate_inputs_reject_batch() {
    let emu = start(Options::default()).await;
    let (s, v) = emu
        .upsert(
            "contacts",
            json!([contact("a@x.io", "A"), contact("a@x.io", "B")]),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn h12_value_validation() {
    let emu = start(Options::default()).await;
    let inp = json!([{"idProperty": "email", "id": "a@x.io", "properties": {"annualrevenue": 5}}]);
    let (s, v) = emu.upsert("contacts", inp).await;
    assert_eq!(s, 400, "non-string value");
    assert_eq!(v["category"], "VALIDATION_ERROR");
    let cases = [
        ("annualrevenue", "abc", false),
        ("annualrevenue", "12.5", true),
        ("lifecyclestage", "Lead", false),
        ("lifecyclestage", "lead", true),
        ("is_vip", "yes", false),
        ("is_vip", "true", true),
        ("date_of_birth", "1572480000000", true),
        ("date_of_birth", "1572480000001", false),
        ("date_of_birth", "2019-10-31", true),
        ("lastmodifieddate", "2019-10-31T00:00:00Z", false),
    ];
    for (i, (k, val, ok)) in cases.into_iter().enumerate() {
        let inp =
            json!([{"idProperty": "email", "id": format!("v{i}@x.io"), "properties": {k: val}}]);
        let (s, v) = emu.upsert("contacts", inp).await;
        assert_eq!(s == 200, ok, "{k}={val}: {v}");
    }
    let (_, _, v) = emu
        .req(
            "GET",
            "/crm/v3/objects/contacts/v6@x.io?idProperty=email&properties=date_of_birth",
            None,
        )
        .await;
    assert_eq!(v["properties"]["date_of_birth"], "2019-10-31");
    // Empty string clears.
    emu.upsert("contacts", json!([contact("v1@x.io", "X")]))
        .await;
    let inp =
        json!([{"idProperty": "email", "id": "v1@x.io", "properties": {"annualrevenue": ""}}]);
    let (_, v) = emu.upsert("contacts", inp).await;
    assert!(v["results"][0]["properties"].get("annualrevenue").is_none());
}

#[tokio::test]
async fn h13_lastmodified_and_property_history() {
    let emu = start(Options::default()).await;
    let (_, v) = emu
        .upsert("contacts", json!([contact("h@x.io", "One")]))
        .await;
    let id = v["results"][0]["id"].as_str().unwrap().to_string();
    let lm1 = v["results"][0]["properties"]["lastmodifieddate"].clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, v) = emu
        .upsert("contacts", json!([contact("h@x.io", "Two")]))
        .await;
    assert_ne!(v["results"][0]["properties"]["lastmodifieddate"], lm1);
    assert_eq!(
        v["results"][0]["updatedAt"],
        v["results"][0]["properties"]["lastmodifieddate"]
    );
    let (s, _, v) = emu
        .req(
            "GET",
            &format!("/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let h = v["propertiesWithHistory"]["firstname"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["value"], "Two");
    assert_eq!(h[1]["value"], "One");
    assert_eq!(h[0]["sourceType"], "INTEGRATION");
    assert!(h[0]["timestamp"].is_string());
    let (_, v) = emu
        .upsert(
            "deals",
            json!([{"idProperty": "pg_external_id", "id": "1", "properties": {"dealname": "D"}}]),
        )
        .await;
    assert!(v["results"][0]["properties"]["hs_lastmodifieddate"].is_string());
}

#[tokio::test]
async fn h14_search_keyset_paging_by_lastmodifieddate() {
    let emu = start(Options {
        search_per_second: 100,
        search_index_lag: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let (_, v) = emu
        .upsert("contacts", json!([contact("s0@x.io", "S")]))
        .await;
    let t0 = v["results"][0]["properties"]["lastmodifieddate"]
        .as_str()
        .unwrap()
        .to_string();
    let t0_ms = to_ms(&t0).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let inputs: Vec<Value> = (1..=25)
        .map(|i| contact(&format!("s{i}@x.io"), "S"))
        .collect();
    emu.upsert("contacts", json!(inputs)).await;
    let mut seen = vec![];
    let mut after: Option<String> = None;
    loop {
        let mut body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GT", "value": t0_ms.to_string()}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["email"],
            "limit": 10,
        });
        if let Some(a) = &after {
            body["after"] = json!(a);
        }
        let (s, _, v) = emu
            .req("POST", "/crm/v3/objects/contacts/search", Some(body))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["total"].as_u64(), Some(25));
        for r in v["results"].as_array().unwrap() {
            seen.push(r["properties"]["email"].as_str().unwrap().to_string());
        }
        match v["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.into()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(!seen.contains(&"s0@x.io".to_string()));
    let eq = json!({"filterGroups": [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "EQ", "value": t0}]}]});
    let (_, _, v) = emu
        .req("POST", "/crm/v3/objects/contacts/search", Some(eq))
        .await;
    assert_eq!(v["total"].as_u64(), Some(1));
    let (s, _, _) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/search",
            Some(json!({"limit": 201})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/search",
            Some(json!({"limit": 100, "after": "9950"})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn h15_filter_group_limits() {
    let emu = start(Options::default()).await;
    let f = json!({"propertyName": "email", "operator": "HAS_PROPERTY"});
    let groups: Vec<Value> = (0..6).map(|_| json!({"filters": [f]})).collect();
    let (s, _, v) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/search",
            Some(json!({"filterGroups": groups})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn h16_properties_api_schema() {
    let emu = start(Options::default()).await;
    let (s, _, v) = emu.req("GET", "/crm/v3/properties/contacts", None).await;
    assert_eq!(s, 200);
    let props = v["results"].as_array().unwrap();
    let get = |n: &str| props.iter().find(|p| p["name"] == n).unwrap().clone();
    assert_eq!(get("email")["hasUniqueValue"], true);
    assert_eq!(get("lifecyclestage")["type"], "enumeration");
    assert!(
        !get("lifecyclestage")["options"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        get("hs_object_id")["modificationMetadata"]["readOnlyValue"],
        true
    );
    assert_eq!(get("lastmodifieddate")["type"], "datetime");
    assert_eq!(get("pg_external_id")["hasUniqueValue"], true);
    let (_, _, v) = emu.req("GET", "/crm/v3/properties/deals", None).await;
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "hs_lastmodifieddate")
    );
}

#[tokio::test]
async fn h17_error_shape() {
    let emu = start(Options::default()).await;
    let (s, h, v) = emu
        .req("GET", "/crm/v3/objects/contacts/999999", None)
        .await;
    assert_eq!(s, 404);
    assert_eq!(v["status"], "error");
    assert_eq!(v["category"], "OBJECT_NOT_FOUND");
    assert_eq!(v["correlationId"].as_str().unwrap().len(), 36);
    assert!(h.contains_key("x-hubspot-correlation-id"));
}

/// One request through the routes in process (no socket), on state the test can inspect.
async fn call(st: &Shared, method: &str, path: &str, body: Value) -> (u16, Value) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, "Bearer test-token")
        .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    send(st, request).await
}

/// Sends `request` through the routes in process: the status and the JSON answer (null when
/// the answer is not JSON).
async fn send(st: &Shared, request: axum::http::Request<axum::body::Body>) -> (u16, Value) {
    let r = tower::ServiceExt::oneshot(routes(st.clone()), request)
        .await
        .unwrap();
    let status = r.status().as_u16();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

type IndexRow = (String, String, String, u64);

/// The unique-value index as (type, property, value, id) rows, and the same rebuilt from
/// the live records: they must always be equal.
fn index_rows(st: &Shared) -> (Vec<IndexRow>, Vec<IndexRow>) {
    let st = st.lock().unwrap();
    let mut kept = vec![];
    for (t, props) in &st.unique {
        for (p, values) in props {
            for (v, id) in values {
                kept.push((t.to_string(), p.clone(), v.clone(), *id));
            }
        }
    }
    let mut rebuilt = vec![];
    for (t, recs) in &st.objects {
        for r in recs.values().filter(|r| !r.archived) {
            for (p, v) in r.props.iter().filter(|(p, _)| is_unique(t, p)) {
                rebuilt.push((t.to_string(), p.clone(), v.clone(), r.id));
            }
        }
    }
    kept.sort();
    rebuilt.sort();
    (kept, rebuilt)
}

#[tokio::test]
async fn unique_index_follows_value_changes_and_archives() {
    let st: Shared = Arc::new(Mutex::new(Inner::new(Options::default())));
    let ups = "/crm/v3/objects/contacts/batch/upsert";
    let by = |p: &str, id: &str, props: Value| json!({"inputs": [{"idProperty": p, "id": id, "properties": props}]});
    macro_rules! consistent {
        () => {{
            let (kept, rebuilt) = index_rows(&st);
            assert_eq!(kept, rebuilt);
        }};
    }
    // Create by email, then change the email through the other unique property.
    let (s, v) = call(
        &st,
        "POST",
        ups,
        by("email", "a@x.io", json!({"pg_external_id": "1"})),
    )
    .await;
    assert_eq!((s, &v["results"][0]["new"]), (200, &json!(true)));
    let first = v["results"][0]["id"].as_str().unwrap().to_string();
    consistent!();
    let (s, v) = call(
        &st,
        "POST",
        ups,
        by("pg_external_id", "1", json!({"email": "b@x.io"})),
    )
    .await;
    assert_eq!((s, &v["results"][0]["id"]), (200, &json!(first)));
    consistent!();
    // The old value no longer matches: a new record; the new value matches the first one.
    let (_, v) = call(
        &st,
        "POST",
        ups,
        by("email", "a@x.io", json!({"firstname": "A"})),
    )
    .await;
    assert_eq!(v["results"][0]["new"], true);
    let second = v["results"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let (_, v) = call(
        &st,
        "POST",
        ups,
        by("email", "b@x.io", json!({"firstname": "B"})),
    )
    .await;
    assert_eq!(
        (&v["results"][0]["new"], &v["results"][0]["id"]),
        (&json!(false), &json!(first))
    );
    consistent!();
    // Taking a value another live record holds is a conflict and changes nothing.
    let (s, v) = call(
        &st,
        "POST",
        ups,
        by("pg_external_id", "1", json!({"email": "a@x.io"})),
    )
    .await;
    assert_eq!((s, v["category"].as_str()), (400, Some("CONFLICT")));
    consistent!();
    // Clearing a value unindexes it.
    let (s, _) = call(
        &st,
        "PATCH",
        &format!("/crm/v3/objects/contacts/{first}"),
        json!({"properties": {"email": ""}}),
    )
    .await;
    assert_eq!(s, 200);
    consistent!();
    let (_, v) = call(&st, "POST", ups, by("email", "b@x.io", json!({}))).await;
    assert_eq!(v["results"][0]["new"], true);
    consistent!();
    // An archived record leaves the index: an upsert by its value creates a new record,
    // while an archived read still finds it.
    let (s, _) = call(
        &st,
        "DELETE",
        &format!("/crm/v3/objects/contacts/{second}"),
        json!(null),
    )
    .await;
    assert_eq!(s, 204);
    consistent!();
    let (_, v) = call(&st, "POST", ups, by("email", "a@x.io", json!({}))).await;
    assert_eq!(v["results"][0]["new"], true);
    let fourth = v["results"][0]["id"].as_str().unwrap().to_string();
    consistent!();
    let (s, v) = call(
        &st,
        "GET",
        "/crm/v3/objects/contacts/a@x.io?idProperty=email&archived=true",
        json!(null),
    )
    .await;
    assert_eq!((s, &v["id"]), (200, &json!(second)));
    let (_, v) = call(
        &st,
        "GET",
        "/crm/v3/objects/contacts/a@x.io?idProperty=email",
        json!(null),
    )
    .await;
    assert_eq!(v["id"], json!(fourth));
    // A UI edit moves the value too; batch/create may then reuse the freed one.
    let (s, _) = call(
        &st,
        "POST",
        &format!("/_emulator/objects/contacts/{fourth}/edit"),
        json!({"properties": {"email": "c@x.io"}}),
    )
    .await;
    assert_eq!(s, 200);
    consistent!();
    let create = json!({"inputs": [{"properties": {"email": "a@x.io"}}]});
    let (s, _) = call(&st, "POST", "/crm/v3/objects/contacts/batch/create", create).await;
    assert_eq!(s, 201);
    consistent!();
    let (kept, _) = index_rows(&st);
    let emails: Vec<&str> = kept
        .iter()
        .filter(|r| r.1 == "email")
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(emails, ["a@x.io", "b@x.io", "c@x.io"]);
}

#[tokio::test]
async fn h20_archive_hides_and_archived_reads() {
    let emu = start(Options {
        search_index_lag: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let (_, v) = emu
        .upsert("contacts", json!([contact("z@x.io", "Z")]))
        .await;
    let id = v["results"][0]["id"].as_str().unwrap().to_string();
    let (s, _, v) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/batch/archive",
            Some(json!({"inputs": [{"id": id}]})),
        )
        .await;
    assert_eq!(s, 204);
    assert!(v.is_null());
    let path = format!("/crm/v3/objects/contacts/{id}");
    assert_eq!(emu.req("GET", &path, None).await.0, 404);
    let (s, _, v) = emu.req("GET", &format!("{path}?archived=true"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["archived"], true);
    let (_, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
    assert!(v["results"].as_array().unwrap().is_empty());
    let (_, _, v) = emu
        .req("POST", "/crm/v3/objects/contacts/search", Some(json!({})))
        .await;
    assert_eq!(v["total"].as_u64(), Some(0));
    // Upserting the archived record's email creates a new record.
    let (_, v) = emu
        .upsert("contacts", json!([contact("z@x.io", "Z2")]))
        .await;
    assert_eq!(v["results"][0]["new"], true);
    assert_ne!(v["results"][0]["id"], id.as_str());
    let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
    assert_eq!(st["objects"]["contacts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn fault_status_then_success() {
    let emu = start(Options::default()).await;
    emu.faults(json!([{"path": "batch/upsert", "status": 500, "count": 2}]))
        .await;
    for _ in 0..2 {
        let (s, v) = emu
            .upsert("contacts", json!([contact("f@x.io", "F")]))
            .await;
        assert_eq!(s, 500);
        assert_eq!(v["status"], "error");
    }
    let (s, _) = emu
        .upsert("contacts", json!([contact("f@x.io", "F")]))
        .await;
    assert_eq!(s, 200);
    emu.faults(json!({"path": "contacts", "status": 429})).await;
    let (s, v) = emu
        .upsert("contacts", json!([contact("f@x.io", "G")]))
        .await;
    assert_eq!(s, 429);
    assert_eq!(v["policyName"], "TEN_SECONDLY_ROLLING");
}

#[tokio::test]
async fn fault_fail_after_write_applies_write() {
    let emu = start(Options::default()).await;
    emu.faults(json!({"path": "batch/upsert", "fail_after_write": true}))
        .await;
    let (s, _) = emu
        .upsert("contacts", json!([contact("w@x.io", "W")]))
        .await;
    assert_eq!(s, 500);
    let (s, _, v) = emu
        .req(
            "GET",
            "/crm/v3/objects/contacts/w@x.io?idProperty=email",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["firstname"], "W");
}

#[tokio::test]
async fn fault_delay_and_reset_connection() {
    let emu = start(Options::default()).await;
    emu.faults(
        json!([{"path": "/crm/", "delay_ms": 300}, {"path": "/crm/", "reset_connection": true}]),
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        emu.req("GET", "/crm/v3/objects/contacts", None).await.0,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    let r = emu
        .client
        .get(format!("{}/crm/v3/objects/contacts", emu.base))
        .bearer_auth("test-token")
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "connection must be aborted");
    assert_eq!(
        emu.req("GET", "/crm/v3/objects/contacts", None).await.0,
        200
    );
    let (s, _, _) = emu.req("POST", "/_emulator/reset", None).await;
    assert_eq!(s, 204);
}
