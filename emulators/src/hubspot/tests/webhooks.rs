//! Tests of webhook delivery (events, signatures, batching, retries, deletion events) and of
//! emulated HubSpot-UI edits, against a local receiver.

use super::*;
use crate::hubspot::signature::{sign_v1, sign_v3};

const SECRET: &str = "hook-secret";

/// One request received by the test receiver.
#[derive(Clone, Debug)]
struct Delivery {
    at: Instant,
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn events(&self) -> Vec<Value> {
        serde_json::from_slice::<Vec<Value>>(&self.body).expect("a JSON array")
    }
}

/// A scripted reply: status, optional `Retry-After`, delay before answering.
type Reply = (u16, Option<&'static str>, u64);

/// A local webhook receiver: records deliveries, answers from a script, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>) -> Receiver {
        let got = Arc::new(Mutex::new(vec![]));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (g, s) = (got.clone(), script.clone());
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                let host = headers[header::HOST].to_str().unwrap().to_string();
                g.lock().unwrap().push(Delivery {
                    at: Instant::now(),
                    url: format!("http://{host}{uri}"),
                    headers,
                    body,
                });
                let (status, retry_after, delay) =
                    s.lock().unwrap().pop_front().unwrap_or((200, None, 0));
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let mut r = empty(StatusCode::from_u16(status).unwrap());
                if let Some(ra) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static(ra));
                }
                r
            }
        });
        let base = crate::serve_for_test(app).await;
        Receiver {
            url: format!("{base}/hubspot/hooks?tenant=a%40b"),
            got,
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .flat_map(Delivery::events)
            .collect()
    }

    /// Waits until `n` events arrived (panics after 10 s).
    async fn wait_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = self.events();
            if ev.len() >= n {
                return ev;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events arrived: {ev:?}",
                ev.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` requests arrived (panics after 10 s).
    async fn wait_requests(&self, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.deliveries();
            if d.len() >= n {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests",
                d.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Emu {
    async fn hooks(&self, rx: &Receiver, extra: Value) -> Value {
        let mut cfg = json!({"target_url": rx.url, "client_secret": SECRET, "app_id": 777,
                             "retry_base_ms": 20});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let (s, _, v) = self.req("POST", "/_emulator/webhooks", Some(cfg)).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn hook_stats(&self) -> Value {
        let (s, _, v) = self.req("GET", "/_emulator/webhooks", None).await;
        assert_eq!(s, 200);
        v
    }

    /// Waits until the emulator has no pending events and `requests` requests were made.
    async fn settle(&self, requests: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.hook_stats().await;
            if v["pending"] == 0 && v["stats"]["requests"].as_u64() >= Some(requests) {
                return v;
            }
            assert!(Instant::now() < deadline, "not settled: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn by_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["subscriptionType"] == ty)
        .collect()
}

#[tokio::test]
async fn h18_webhooks_for_create_change_delete_are_signed() {
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![]).await;
    let cfg = emu.hooks(&rx, json!({})).await;
    assert_eq!(cfg["config"]["max_batch"], 100);
    assert_eq!(cfg["config"]["events"].as_array().unwrap().len(), 9);

    let (_, v) = emu
        .upsert("contacts", json!([contact("w@x.io", "Ann")]))
        .await;
    let id: u64 = v["results"][0]["id"].as_str().unwrap().parse().unwrap();
    let ev = rx.wait_events(3).await;
    let created = by_type(&ev, "contact.creation");
    assert_eq!(created.len(), 1);
    let c = created[0];
    assert_eq!(c["objectId"], id);
    assert_eq!(c["portalId"], 62515);
    assert_eq!(c["appId"], 777);
    assert_eq!(c["attemptNumber"], 0);
    assert_eq!(c["changeFlag"], "CREATED");
    assert_eq!(c["changeSource"], "INTEGRATION");
    assert_eq!(c["sourceId"], "driftless");
    assert!(c["occurredAt"].as_i64().unwrap() > 1_600_000_000_000);
    let subs = cfg["subscriptions"].as_array().unwrap();
    let sub_id = subs
        .iter()
        .find(|s| s["eventType"] == "contact.creation")
        .unwrap()["id"]
        .clone();
    assert_eq!(c["subscriptionId"], sub_id);
    // Values set at creation are property changes too (unset → set).
    let mut props: Vec<(String, String)> = by_type(&ev, "contact.propertyChange")
        .iter()
        .map(|e| {
            assert_eq!(e["objectId"], id);
            assert_eq!(e["changeSource"], "INTEGRATION");
            assert_eq!(e["sourceId"], "driftless");
            (
                e["propertyName"].as_str().unwrap().into(),
                e["propertyValue"].as_str().unwrap().into(),
            )
        })
        .collect();
    props.sort();
    assert_eq!(
        props,
        [
            ("email".into(), "w@x.io".into()),
            ("firstname".into(), "Ann".into())
        ]
    );

    // Headers and signatures of the request.
    let d = &rx.deliveries()[0];
    assert_eq!(d.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(d.headers["x-hubspot-signature-version"], "v1");
    let ts_header = d.headers["x-hubspot-request-timestamp"].to_str().unwrap();
    let ts: i64 = ts_header.parse().unwrap();
    let now = Utc::now().timestamp_millis();
    assert!((now - ts).abs() < 60_000);
    let v3 = d.headers["x-hubspot-signature-v3"].to_str().unwrap();
    assert_eq!(d.url, rx.url);
    assert_eq!(sign_v3(SECRET, "POST", &d.url, &d.body, ts), v3);
    assert_ne!(sign_v3("wrong", "POST", &d.url, &d.body, ts), v3);
    let v1 = d.headers["x-hubspot-signature"].to_str().unwrap();
    assert_eq!(sign_v1(SECRET, &d.body), v1);

    // An update emits exactly one change; a no-op write emits nothing.
    emu.upsert("contacts", json!([contact("w@x.io", "Bea")]))
        .await;
    let ev = rx.wait_events(4).await;
    let last = &ev[3];
    assert_eq!(last["subscriptionType"], "contact.propertyChange");
    assert_eq!(last["propertyName"], "firstname");
    assert_eq!(last["propertyValue"], "Bea");
    let (s, _, _) = emu
        .req(
            "PATCH",
            &format!("/crm/v3/objects/contacts/{id}"),
            Some(json!({"properties": {"firstname": "Bea", "email": "w@x.io"}})),
        )
        .await;
    assert_eq!(s, 200);
    emu.upsert("contacts", json!([contact("w@x.io", "Bea")]))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.events().len(), 4);

    // Deletions: single DELETE and batch/archive; archiving twice emits once.
    let (_, v) = emu
        .upsert("contacts", json!([contact("z@x.io", "Zed")]))
        .await;
    let id2: u64 = v["results"][0]["id"].as_str().unwrap().parse().unwrap();
    let (s, _, _) = emu
        .req("DELETE", &format!("/crm/v3/objects/contacts/{id}"), None)
        .await;
    assert_eq!(s, 204);
    for _ in 0..2 {
        let (s, _, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/batch/archive",
                Some(json!({"inputs": [{"id": id2.to_string()}]})),
            )
            .await;
        assert_eq!(s, 204);
    }
    // Other object types use their own names.
    let (s, _, _) = emu
        .req(
            "POST",
            "/crm/v3/objects/companies",
            Some(json!({"properties": {"name": "Acme"}})),
        )
        .await;
    assert_eq!(s, 201);
    let ev = rx.wait_events(11).await;
    let deleted: Vec<u64> = by_type(&ev, "contact.deletion")
        .iter()
        .map(|e| {
            assert_eq!(e["changeFlag"], "DELETED");
            assert_eq!(e["changeSource"], "INTEGRATION");
            e["objectId"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(deleted, [id, id2]);
    assert_eq!(by_type(&ev, "company.creation").len(), 1);
    assert_eq!(
        by_type(&ev, "company.propertyChange")[0]["propertyName"],
        "name"
    );
    // Event ids are unique and increasing in (unshuffled) delivery order.
    let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.events().len(), 11);
    let st = emu.hook_stats().await;
    assert_eq!(st["stats"]["events_delivered"], 11);
    assert_eq!(st["stats"]["failures"], 0);
    assert_eq!(st["stats"]["retries"], 0);
}

#[tokio::test]
async fn ui_edit_emits_crm_ui_changes_and_records_history() {
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![]).await;
    emu.hooks(&rx, json!({"events": ["contact.propertyChange"]}))
        .await;
    let (_, v) = emu
        .upsert("contacts", json!([contact("u@x.io", "Api")]))
        .await;
    let id = v["results"][0]["id"].as_str().unwrap().to_string();
    let lm1 = v["results"][0]["properties"]["lastmodifieddate"].clone();
    rx.wait_events(2).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let edit = format!("/_emulator/objects/contacts/{id}/edit");
    let (s, _, v) = emu
        .req(
            "POST",
            &edit,
            Some(json!({"properties": {"firstname": "Ui", "lastname": "Edit"}, "userId": 123})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["firstname"], "Ui");
    assert_ne!(v["properties"]["lastmodifieddate"], lm1);
    let ev = rx.wait_events(4).await;
    for e in &ev[2..] {
        assert_eq!(e["changeSource"], "CRM_UI");
        assert_eq!(e["sourceId"], "userId:123");
        assert_eq!(e["objectId"].to_string(), id);
    }
    let names: Vec<&str> = ev[2..]
        .iter()
        .map(|e| e["propertyName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["firstname", "lastname"]);

    let (_, _, v) = emu
        .req(
            "GET",
            &format!("/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname"),
            None,
        )
        .await;
    let h = &v["propertiesWithHistory"]["firstname"];
    assert_eq!(h[0]["value"], "Ui");
    assert_eq!(h[0]["sourceType"], "CRM_UI");
    assert_eq!(h[0]["sourceId"], "userId:123");
    assert_eq!(h[0]["updatedByUserId"], 123);
    assert_eq!(h[1]["sourceType"], "INTEGRATION");
    assert_eq!(h[1]["updatedByUserId"], Value::Null);

    // A UI edit that changes nothing emits nothing; bad input and unknown ids are refused.
    let (s, _, _) = emu
        .req(
            "POST",
            &edit,
            Some(json!({"properties": {"firstname": "Ui"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = emu
        .req("POST", &edit, Some(json!({"properties": {"nope": "x"}})))
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = emu
        .req(
            "POST",
            "/_emulator/objects/contacts/999999/edit",
            Some(json!({"properties": {"firstname": "x"}})),
        )
        .await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(rx.events().len(), 4);

    // UI create and archive (singular type names are accepted too).
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation", "contact.deletion"]}),
    )
    .await;
    let (s, _, v) = emu
        .req(
            "POST",
            "/_emulator/objects/contact",
            Some(json!({"properties": {"email": "new@x.io"}, "userId": 9})),
        )
        .await;
    assert_eq!(s, 201);
    let new_id = v["id"].as_str().unwrap().to_string();
    let (s, _, _) = emu
        .req(
            "POST",
            &format!("/_emulator/objects/contacts/{new_id}/archive"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let ev = rx.wait_events(6).await;
    assert_eq!(ev[4]["subscriptionType"], "contact.creation");
    assert_eq!(ev[5]["subscriptionType"], "contact.deletion");
    assert_eq!(ev[5]["sourceId"], "userId:1");
    // UI writes go around the API: no requests counted against the token.
    let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
    assert!(st["requests"]["byPath"].get(&edit).is_none());
}

#[tokio::test]
async fn h19_retries_5xx_with_backoff_and_attempt_numbers() {
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![(500, None, 0), (503, None, 0)]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "retry_base_ms": 100}),
    )
    .await;
    emu.upsert("contacts", json!([contact("r@x.io", "R")]))
        .await;
    let d = rx.wait_requests(3).await;
    let attempts: Vec<Value> = d
        .iter()
        .map(|d| d.events()[0]["attemptNumber"].clone())
        .collect();
    assert_eq!(attempts, [0, 1, 2]);
    let ids: Vec<Value> = d.iter().map(|d| d.events()[0]["eventId"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    // Exponential backoff: 100 ms, then 200 ms.
    assert!(d[1].at - d[0].at >= Duration::from_millis(90));
    assert!(d[2].at - d[1].at >= Duration::from_millis(190));
    // Each retry is signed afresh.
    let ts: i64 = d[2].headers["x-hubspot-request-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v3 = d[2].headers["x-hubspot-signature-v3"].to_str().unwrap();
    assert_eq!(sign_v3(SECRET, "POST", &d[2].url, &d[2].body, ts), v3);
    let st = emu.settle(3).await;
    assert_eq!(st["stats"]["retries"], 2);
    assert_eq!(st["stats"]["events_delivered"], 1);
    assert_eq!(st["stats"]["failures"], 0);
    assert_eq!(st["stats"]["last_status"], 200);
}

#[tokio::test]
async fn h19_client_errors_are_not_retried_and_retries_are_bounded() {
    for status in [400, 401, 403, 404, 405] {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![(status, None, 0)]).await;
        emu.hooks(&rx, json!({"events": ["contact.creation"]}))
            .await;
        emu.upsert("contacts", json!([contact("n@x.io", "N")]))
            .await;
        rx.wait_requests(1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(rx.deliveries().len(), 1, "{status} must not be retried");
        let st = emu.settle(1).await;
        assert_eq!(st["stats"]["failures"], 1);
        assert_eq!(st["stats"]["retries"], 0);
        assert_eq!(st["stats"]["last_status"], status);
    }
    // 3xx/5xx are retried, but only max_retries times.
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![(302, None, 0), (502, None, 0), (500, None, 0)]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "max_retries": 2, "retry_base_ms": 10}),
    )
    .await;
    emu.upsert("contacts", json!([contact("m@x.io", "M")]))
        .await;
    rx.wait_requests(3).await;
    let st = emu.settle(3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.deliveries().len(), 3);
    assert_eq!(st["stats"]["retries"], 2);
    assert_eq!(st["stats"]["failures"], 1);
    assert_eq!(st["stats"]["events_delivered"], 0);
}

#[tokio::test]
async fn h19_timeouts_connect_failures_and_retry_after() {
    // A reply slower than timeout_ms is retried.
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![(200, None, 1000)]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "timeout_ms": 150}),
    )
    .await;
    emu.upsert("contacts", json!([contact("t@x.io", "T")]))
        .await;
    let d = rx.wait_requests(2).await;
    assert_eq!(d[1].events()[0]["attemptNumber"], 1);
    assert_eq!(
        d[0].headers["x-hubspot-timeout-millis"].to_str().unwrap(),
        "150"
    );
    let st = emu.settle(2).await;
    assert_eq!(st["stats"]["retries"], 1);
    assert_eq!(st["stats"]["events_delivered"], 1);

    // 429 honours Retry-After (1 s) instead of the (10 s) backoff.
    let rx = Receiver::start(vec![(429, Some("1"), 0)]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "retry_base_ms": 10_000}),
    )
    .await;
    emu.upsert("contacts", json!([contact("q@x.io", "Q")]))
        .await;
    let d = rx.wait_requests(2).await;
    let gap = d[1].at - d[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_secs(5),
        "{gap:?}"
    );
    assert_eq!(d[1].events()[0]["attemptNumber"], 1);

    // Nothing listening: connection failures are retried until max_retries.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (s, _, _) = emu
        .req(
            "POST",
            "/_emulator/webhooks",
            Some(
                json!({"target_url": format!("http://{dead}/x"), "client_secret": SECRET,
                        "events": ["contact.creation"], "retry_base_ms": 5, "max_retries": 3}),
            ),
        )
        .await;
    assert_eq!(s, 200);
    emu.upsert("contacts", json!([contact("c@x.io", "C")]))
        .await;
    let st = emu.settle(4).await;
    assert_eq!(st["stats"]["requests"], 4);
    assert_eq!(st["stats"]["retries"], 3);
    assert_eq!(st["stats"]["failures"], 1);
    assert_eq!(st["stats"]["last_status"], Value::Null);
}

async fn create_contacts(emu: &Emu, prefix: &str, n: usize) {
    let inputs: Vec<Value> = (0..n)
        .map(|i| json!({"properties": {"email": format!("{prefix}{i}@x.io")}}))
        .collect();
    let (s, _, _) = emu
        .req(
            "POST",
            "/crm/v3/objects/contacts/batch/create",
            Some(json!({ "inputs": inputs })),
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn h18_batches_are_capped_and_shuffle_reorders() {
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "max_batch": 5, "batch_window_ms": 200}),
    )
    .await;
    create_contacts(&emu, "a", 12).await;
    let ev = rx.wait_events(12).await;
    let sizes: Vec<usize> = rx.deliveries().iter().map(|d| d.events().len()).collect();
    assert_eq!(sizes, [5, 5, 2]);
    let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let rx = Receiver::start(vec![]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.propertyChange"], "max_batch": 5,
               "batch_window_ms": 200, "shuffle": true}),
    )
    .await;
    create_contacts(&emu, "s", 30).await;
    let ev = rx.wait_events(30).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.events().len(), 30);
    assert!(rx.deliveries().iter().all(|d| d.events().len() <= 5));
    let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 30, "every event exactly once");
    assert_ne!(ids, sorted, "shuffle must reorder (30! orders)");
    // Reordered across requests too: the first request is not just the 5 oldest, in some order.
    let mut first: Vec<u64> = ids[..5].to_vec();
    first.sort_unstable();
    let across = first != sorted[..5]
        || rx.deliveries()[1..].iter().any(|d| {
            let mut b: Vec<u64> = d
                .events()
                .iter()
                .map(|e| e["eventId"].as_u64().unwrap())
                .collect();
            b.sort_unstable();
            b.windows(2).any(|w| w[1] - w[0] > 1)
        });
    assert!(across, "{ids:?}");
}

#[tokio::test]
async fn h19_duplicate_and_drop_knobs() {
    let emu = start(Options::default()).await;
    let rx = Receiver::start(vec![]).await;
    emu.hooks(
        &rx,
        json!({"events": ["contact.creation"], "duplicate_every": 3, "drop_every": 4}),
    )
    .await;
    create_contacts(&emu, "d", 12).await;
    // Events 1..=12: 4, 8, 12 dropped; 3, 6, 9 sent twice → 9 distinct, 12 deliveries.
    let ev = rx.wait_events(12).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(rx.events().len(), 12);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &ev {
        *counts.entry(e["eventId"].as_u64().unwrap()).or_default() += 1;
    }
    let first = *counts.keys().next().unwrap();
    let expect: BTreeMap<u64, usize> = (1..=12u64)
        .filter(|n| n % 4 != 0)
        .map(|n| (first + n - 1, if n % 3 == 0 { 2 } else { 1 }))
        .collect();
    assert_eq!(counts, expect);
    let st = emu.settle(1).await;
    assert_eq!(st["stats"]["dropped"], 3);
    assert_eq!(st["stats"]["duplicated"], 3);
    assert_eq!(st["stats"]["events_delivered"], 12);
}

#[tokio::test]
async fn webhook_config_validation_delete_and_reset() {
    let emu = start(Options::default()).await;
    let (s, _, _) = emu.req("GET", "/_emulator/webhooks", None).await;
    assert_eq!(s, 404);
    let rx = Receiver::start(vec![]).await;
    for bad in [
        json!({"target_url": rx.url, "client_secret": "s", "events": ["contact.merge"]}),
        json!({"target_url": "not a url", "client_secret": "s"}),
        json!({"target_url": rx.url, "client_secret": "s", "max_batch": 0}),
        json!({"target_url": rx.url, "client_secret": "s", "bogus": 1}),
        json!({"client_secret": "s"}),
    ] {
        let (s, _, _) = emu.req("POST", "/_emulator/webhooks", Some(bad)).await;
        assert_eq!(s, 400);
    }
    // Only subscribed event types and properties are delivered.
    emu.hooks(
        &rx,
        json!({"events": ["contact.propertyChange"], "properties": ["lastname"]}),
    )
    .await;
    emu.upsert(
        "contacts",
        json!([{"idProperty": "email", "id": "p@x.io",
                "properties": {"firstname": "F", "lastname": "L"}}]),
    )
    .await;
    let ev = rx.wait_events(1).await;
    assert_eq!(ev[0]["propertyName"], "lastname");
    // DELETE stops deliveries; so does reset.
    let (s, _, _) = emu.req("DELETE", "/_emulator/webhooks", None).await;
    assert_eq!(s, 204);
    emu.upsert("contacts", json!([contact("p@x.io", "G")]))
        .await;
    emu.hooks(&rx, json!({})).await;
    let (s, _, _) = emu.req("POST", "/_emulator/reset", None).await;
    assert_eq!(s, 204);
    emu.upsert("contacts", json!([contact("p@x.io", "H")]))
        .await;
    let (s, _, _) = emu.req("GET", "/_emulator/webhooks", None).await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(rx.events().len(), 1);
}
