//! Tests of the emulator's knobs: search index lag, whole-batch 400 vs 207 for invalid input,
//! lowercased emails, scopes and the OAuth client check, and the settings route.

use super::*;
use crate::hubspot::search;

fn shared(opts: Options) -> Shared {
    Arc::new(Mutex::new(Inner::new(opts)))
}

/// One search with `body` at `now` (injected: no wall-clock waits).
async fn search_json(st: &Shared, body: &Value, now: Instant) -> Value {
    let r = search::run(&mut st.lock().unwrap(), "contacts", body, now);
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A search for every contact at `now`: `(id, firstname)`.
async fn search_at(st: &Shared, now: Instant) -> Vec<(String, String)> {
    let body = json!({"properties": ["firstname", "lastmodifieddate"]});
    let v = search_json(st, &body, now).await;
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let first = r["properties"]["firstname"].as_str().unwrap_or_default();
            (r["id"].as_str().unwrap().to_string(), first.to_string())
        })
        .collect()
}

/// Runs `write`, returning the instants just before and just after it.
async fn timed<F: std::future::Future<Output = (u16, Value)>>(
    write: F,
) -> (Instant, Instant, Value) {
    let before = Instant::now();
    let (status, v) = write.await;
    assert!(status < 300, "{status} {v}");
    (before, Instant::now(), v)
}

#[tokio::test]
async fn search_sees_writes_only_after_the_index_lag() {
    let lag = Duration::from_millis(2000);
    assert_eq!(Options::default().search_index_lag, lag, "the default");
    let st = shared(Options::default());
    let just = Duration::from_millis(1);
    let upsert = |first: &str| {
        let body = json!({"inputs": [contact("ana@x.io", first)]});
        call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body)
    };
    // Created: invisible until the lag has passed.
    let (before, after, v) = timed(upsert("Ana")).await;
    let id = v["results"][0]["id"].as_str().unwrap().to_string();
    assert!(search_at(&st, before + lag - just).await.is_empty());
    assert_eq!(
        search_at(&st, after + lag).await,
        [(id.clone(), "Ana".into())]
    );
    // Updated: the previous version until the lag has passed; reads by id are not lagged.
    let (before, after, _) = timed(upsert("Anna")).await;
    assert_eq!(
        search_at(&st, before + lag - just).await,
        [(id.clone(), "Ana".into())]
    );
    let (_, v) = call(
        &st,
        "GET",
        &format!("/crm/v3/objects/contacts/{id}"),
        json!(null),
    )
    .await;
    assert_eq!(v["properties"]["firstname"], "Anna");
    let read = json!({"inputs": [{"id": id}], "properties": ["firstname"]});
    let (_, v) = call(&st, "POST", "/crm/v3/objects/contacts/batch/read", read).await;
    assert_eq!(v["results"][0]["properties"]["firstname"], "Anna");
    assert_eq!(
        search_at(&st, after + lag).await,
        [(id.clone(), "Anna".into())]
    );
    // Archived: still found until the lag has passed.
    let archive = json!({"inputs": [{"id": id}]});
    let (before, after, _) = timed(async {
        let (s, _) = call(
            &st,
            "POST",
            "/crm/v3/objects/contacts/batch/archive",
            archive,
        )
        .await;
        (s, json!({}))
    })
    .await;
    assert_eq!(
        search_at(&st, before + lag - just).await,
        [(id.clone(), "Anna".into())]
    );
    assert!(search_at(&st, after + lag).await.is_empty());
}

#[tokio::test]
async fn search_keeps_the_old_last_modified_date_until_indexed() {
    let lag = Duration::from_millis(500);
    let st = shared(Options {
        search_index_lag: lag,
        ..Options::default()
    });
    let upsert = |first: &str| {
        let body = json!({"inputs": [contact("ana@x.io", first)]});
        call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body)
    };
    let (_, after, v) = timed(upsert("Ana")).await;
    let first_modified = v["results"][0]["properties"]["lastmodifieddate"].clone();
    let filter = |since: &Value| {
        json!({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GT", "value": since}]}],
            "properties": ["lastmodifieddate"]})
    };
    // Dates have millisecond resolution: the second write must get a later one.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let (before, _, v) = timed(upsert("Anna")).await;
    let second_modified = v["results"][0]["properties"]["lastmodifieddate"].clone();
    assert_ne!(first_modified, second_modified);
    // Not indexed yet: search still sees the first date, so "modified after it" finds nothing.
    let early = before + lag - Duration::from_millis(1);
    let v = search_json(&st, &filter(&first_modified), early).await;
    assert_eq!(v["total"], 0, "{v}");
    let all = json!({"properties": ["lastmodifieddate"]});
    let v = search_json(&st, &all, after + lag).await;
    assert_eq!(
        v["results"][0]["properties"]["lastmodifieddate"],
        first_modified
    );
    let v = search_json(&st, &filter(&first_modified), Instant::now() + lag).await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(
        v["results"][0]["properties"]["lastmodifieddate"],
        second_modified
    );
}

#[tokio::test]
async fn settings_apply_knobs_survive_reset_and_refuse_unknown_ones() {
    let st = shared(Options::default());
    let (s, _) = call(
        &st,
        "POST",
        "/_emulator/settings",
        json!({"searchIndexLagMs": 0}),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(st.lock().unwrap().opts.search_index_lag, Duration::ZERO);
    let (s, _) = call(&st, "POST", "/_emulator/reset", json!(null)).await;
    assert_eq!(s, 204);
    assert_eq!(
        st.lock().unwrap().opts.search_index_lag,
        Duration::ZERO,
        "kept"
    );
    // Lag 0: a write is found by the very next search.
    let body = json!({"inputs": [contact("ana@x.io", "Ana")]});
    call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body).await;
    let (_, v) = call(&st, "POST", "/crm/v3/objects/contacts/search", json!({})).await;
    assert_eq!(v["total"], 1);
    for bad in [
        json!({"searchIndexLag": 5}),
        json!({"searchIndexLagMs": "slow"}),
        json!({"batchInvalidInput": "sometimes"}),
        json!({"timeZone": "Mars/Olympus_Mons"}),
    ] {
        let (s, v) = call(&st, "POST", "/_emulator/settings", bad.clone()).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(v["category"], "VALIDATION_ERROR");
    }
    let knobs = json!({"batchInvalidInput": "multi_status_207", "lowercaseEmails": false,
                       "tokenScopes": ["crm.objects.contacts.read"], "timeZone": "Asia/Tokyo"});
    assert_eq!(call(&st, "POST", "/_emulator/settings", knobs).await.0, 204);
    let (_, state) = call(&st, "GET", "/_emulator/state", json!(null)).await;
    let expected = json!({"searchIndexLagMs": 0, "batchInvalidInput": "multi_status_207",
        "lowercaseEmails": false, "tokenScopes": ["crm.objects.contacts.read"],
        "timeZone": "Asia/Tokyo"});
    assert_eq!(state["settings"], expected);
    let opts = st.lock().unwrap().opts.clone();
    assert_eq!(opts.batch_invalid_input, BatchInvalidInput::MultiStatus207);
    assert!(!opts.lowercase_emails);
    assert_eq!(opts.token_scopes, ["crm.objects.contacts.read"]);
    assert_eq!(opts.time_zone, chrono_tz::Asia::Tokyo);
}

fn contacts(st: &Shared) -> usize {
    st.lock().unwrap().objects["contacts"].len()
}

#[tokio::test]
async fn invalid_input_fails_the_whole_batch_unless_multi_status() {
    let st = shared(Options::default());
    let bad =
        json!({"idProperty": "email", "id": "b@x.io", "properties": {"lifecyclestage": "Bogus"}});
    let read_only =
        json!({"idProperty": "email", "id": "c@x.io", "properties": {"lastmodifieddate": "1"}});
    let body = json!({"inputs": [contact("a@x.io", "A"), bad, read_only]});
    let (s, v) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        body.clone(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["category"], "VALIDATION_ERROR");
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["INVALID_OPTION", "READ_ONLY_VALUE"]);
    assert_eq!(contacts(&st), 0, "nothing written");
    // Create with trace ids and update: the same whole-batch refusal.
    let create = json!({"inputs": [
        {"properties": {"email": "a@x.io"}, "objectWriteTraceId": "0"},
        {"properties": {"nope": "x"}, "objectWriteTraceId": "1"}]});
    let (s, _) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts/batch/create",
        create.clone(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(contacts(&st), 0);
    // The 207 mode: the good input is written, the bad ones are per-input errors.
    let knob = json!({"batchInvalidInput": "multi_status_207"});
    assert_eq!(call(&st, "POST", "/_emulator/settings", knob).await.0, 204);
    let (s, v) = call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body).await;
    assert_eq!(s, 207, "{v}");
    assert_eq!(v["numErrors"], 2);
    assert_eq!(contacts(&st), 1);
    let (s, v) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts/batch/create",
        json!({"inputs": [
        {"properties": {"email": "d@x.io"}, "objectWriteTraceId": "0"},
        {"properties": {"nope": "x"}, "objectWriteTraceId": "1"}]}),
    )
    .await;
    assert_eq!(s, 207, "{v}");
    assert_eq!(
        v["errors"][0]["context"]["objectWriteTraceId"],
        json!(["1"])
    );
    assert_eq!(contacts(&st), 2);
}

#[tokio::test]
async fn emails_are_stored_lowercased_and_matched_exactly() {
    let st = shared(Options::default());
    let body = json!({"inputs": [contact("Ana@Example.COM", "Ana")]});
    let (s, v) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        body.clone(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["results"][0]["properties"]["email"], "ana@example.com");
    let (s, v) = call(
        &st,
        "GET",
        "/crm/v3/objects/contacts/ana@example.com?idProperty=email",
        json!(null),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["firstname"], "Ana");
    // The stored value is the lowercase one: the mixed-case id is another identity, whose
    // (lowercased) email another record already holds.
    let (s, v) = call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body).await;
    assert_eq!((s, v["category"].as_str()), (400, Some("CONFLICT")), "{v}");
    let (s, v) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts",
        json!({"properties": {"email": "Bo@X.io"}}),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(v["properties"]["email"], "bo@x.io");
    let knob = json!({"lowercaseEmails": false});
    assert_eq!(call(&st, "POST", "/_emulator/settings", knob).await.0, 204);
    let (_, v) = call(
        &st,
        "POST",
        "/crm/v3/objects/contacts",
        json!({"properties": {"email": "Cy@X.io"}}),
    )
    .await;
    assert_eq!(v["properties"]["email"], "Cy@X.io");
}

#[tokio::test]
async fn endpoints_need_their_scopes() {
    use axum::http::Method;
    let need = |m: Method, p: &str| scopes::required(&m, p);
    assert_eq!(
        need(Method::GET, "/crm/v3/objects/contacts/5").as_deref(),
        Some("crm.objects.contacts.read")
    );
    assert_eq!(
        need(Method::POST, "/crm/v3/objects/deals/search").as_deref(),
        Some("crm.objects.deals.read")
    );
    assert_eq!(
        need(Method::POST, "/crm/objects/2026-03/companies/batch/read").as_deref(),
        Some("crm.objects.companies.read")
    );
    assert_eq!(
        need(Method::POST, "/crm/v3/objects/contacts/batch/upsert").as_deref(),
        Some("crm.objects.contacts.write")
    );
    assert_eq!(
        need(Method::DELETE, "/crm/v3/objects/contacts/5").as_deref(),
        Some("crm.objects.contacts.write")
    );
    assert_eq!(
        need(Method::GET, "/crm/v3/properties/contacts").as_deref(),
        Some("crm.schemas.contacts.read")
    );
    assert_eq!(
        need(Method::GET, "/crm/v3/objects/tickets").as_deref(),
        None
    );
    let st = shared(Options::default());
    let (s, _) = call(&st, "GET", "/crm/v3/properties/contacts", json!(null)).await;
    assert_eq!(s, 200, "the default grant holds every scope");
    let knob = json!({"tokenScopes": ["crm.objects.contacts.read"]});
    assert_eq!(call(&st, "POST", "/_emulator/settings", knob).await.0, 204);
    assert_eq!(
        call(&st, "GET", "/crm/v3/objects/contacts", json!(null))
            .await
            .0,
        200
    );
    let body = json!({"inputs": [contact("a@x.io", "A")]});
    let (s, v) = call(&st, "POST", "/crm/v3/objects/contacts/batch/upsert", body).await;
    assert_eq!(s, 403);
    assert_eq!(v["category"], "MISSING_SCOPES");
    assert_eq!(v["status"], "error");
    assert_eq!(
        v["errors"][0]["context"]["requiredGranularScopes"],
        json!(["crm.objects.contacts.write"])
    );
    assert_eq!(
        v["context"]["missingScopes"],
        json!(["crm.objects.contacts.write"])
    );
    assert_eq!(contacts(&st), 0);
    let (s, v) = call(&st, "GET", "/crm/v3/properties/contacts", json!(null)).await;
    assert_eq!(s, 403);
    assert_eq!(
        v["context"]["missingScopes"],
        json!(["crm.schemas.contacts.read"])
    );
}

/// One form-encoded token request in process.
async fn token(st: &Shared, form: &str) -> (u16, Value) {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/oauth/v3/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(form.to_string()))
        .unwrap();
    send(st, request).await
}

#[tokio::test]
async fn token_refresh_checks_the_client_id_and_secret() {
    let st = shared(Options::default());
    let form = |id: &str, secret: &str| {
        format!(
            "grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token=test-refresh-token"
        )
    };
    let (s, v) = token(&st, &form("test-client-id", "test-client-secret")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scopes"], json!(all_scopes()));
    let (s, v) = token(&st, &form("other-app", "test-client-secret")).await;
    assert_eq!((s, v["status"].as_str()), (400, Some("BAD_CLIENT_ID")));
    let (s, v) = token(&st, &form("test-client-id", "wrong")).await;
    assert_eq!((s, v["status"].as_str()), (400, Some("BAD_CLIENT_SECRET")));
    assert_eq!(v["category"], "VALIDATION_ERROR");
    let (s, v) = token(
        &st,
        "grant_type=refresh_token&refresh_token=test-refresh-token",
    )
    .await;
    assert_eq!(s, 400, "no client credentials");
    assert!(v.is_object(), "a JSON error body: {v}");
}
