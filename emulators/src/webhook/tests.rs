//! Tests of the webhook receiver emulator over HTTP.

use super::*;

struct Emu {
    base: String,
    http: reqwest::Client,
    secret: Secret,
}

async fn start(options: Options) -> Emu {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secret = options.secret.clone();
    Emu {
        base: crate::serve_for_test(router(options)).await,
        // Never follow scripted redirects out of the test.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        secret,
    }
}

impl Emu {
    async fn post_signed(&self, path: &str, id: &str, ts: i64, body: &Value) -> reqwest::Response {
        let raw = serde_json::to_vec(body).unwrap();
        let sig = signature::sign(&self.secret, id, ts, &raw);
        self.post_raw(path, id, &ts.to_string(), &sig, raw).await
    }

    async fn post_raw(
        &self,
        path: &str,
        id: &str,
        ts: &str,
        sig: &str,
        raw: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    async fn state(&self) -> Value {
        let url = format!("{}/_emulator/state", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn fault(&self, spec: Value) {
        let url = format!("{}/_emulator/faults", self.base);
        let r = self.http.post(url).json(&spec).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn signed_delivery_is_accepted_and_recorded() {
    let emu = start(Options::default()).await;
    let body = json!({"type": "contact.updated", "data": {"id": 42, "email": "a@b.c"}});
    let ts = now();
    let r = emu.post_signed("/hooks/crm", "msg_1", ts, &body).await;
    assert_eq!(r.status(), 200);
    let st = emu.state().await;
    let d = &st["deliveries"][0];
    assert_eq!(st["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(d["id"], "msg_1");
    assert_eq!(d["timestamp"], ts);
    assert_eq!(d["path"], "/hooks/crm");
    assert_eq!(d["body"], body);
    assert_eq!(d["headers"]["webhook-id"], "msg_1");
    assert_eq!(d["headers"]["content-type"], "application/json");
    assert_eq!(st["rejected"], 0);
    assert_eq!(st["requests"], 1);
    assert!(st["max_rps"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn forged_and_unsigned_deliveries_are_rejected() {
    let emu = start(Options::default()).await;
    let raw = br#"{"a":1}"#.to_vec();
    let ts = now();
    let other = Secret::parse("whsec_c2VjcmV0").unwrap();
    let forged = signature::sign(&other, "msg_f", ts, &raw);
    let r = emu
        .post_raw("/x", "msg_f", &ts.to_string(), &forged, raw.clone())
        .await;
    assert_eq!(r.status(), 401);
    // Signed correctly but the body was tampered with.
    let sig = signature::sign(&emu.secret, "msg_t", ts, &raw);
    let r = emu
        .post_raw("/x", "msg_t", &ts.to_string(), &sig, b"{}".to_vec())
        .await;
    assert_eq!(r.status(), 401);
    let r = emu
        .http
        .post(format!("{}/x", emu.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let st = emu.state().await;
    assert_eq!(st["rejected"], 3);
    assert_eq!(st["rejections"][0]["id"], "msg_f");
    assert!(st["deliveries"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn stale_and_future_timestamps_are_rejected() {
    let emu = start(Options::default()).await;
    let body = json!({"a": 1});
    let r = emu
        .post_signed("/x", "msg_old", now() - 301 - 5, &body)
        .await;
    assert_eq!(r.status(), 401);
    let r = emu
        .post_signed("/x", "msg_new", now() + 301 + 5, &body)
        .await;
    assert_eq!(r.status(), 401);
    let st = emu.state().await;
    assert_eq!(st["rejected"], 2);
    let reason = st["rejections"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("too old"), "{reason}");
}

#[tokio::test]
async fn custom_secret_and_tolerance() {
    let opts = Options {
        secret: Secret::parse("whsec_c2VjcmV0").unwrap(),
        tolerance_s: 5,
    };
    let emu = start(opts).await;
    let body = json!({"a": 1});
    assert_eq!(
        emu.post_signed("/x", "m1", now(), &body).await.status(),
        200
    );
    assert_eq!(
        emu.post_signed("/x", "m2", now() - 60, &body)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn duplicate_ids_are_recorded_once() {
    let emu = start(Options::default()).await;
    let body = json!({"n": 1});
    for _ in 0..3 {
        let r = emu.post_signed("/x", "msg_dup", now(), &body).await;
        assert_eq!(r.status(), 200);
    }
    let r: Value = emu
        .post_signed("/x", "msg_dup", now(), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["duplicate"], true);
    let st = emu.state().await;
    assert_eq!(st["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(st["deliveries"][0]["attempts"], 4);
    assert_eq!(st["duplicates"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn fault_429_with_retry_after_then_success() {
    let emu = start(Options::default()).await;
    emu.fault(json!({"status": 429, "count": 2, "retry_after_s": 7}))
        .await;
    let body = json!({"n": 1});
    for _ in 0..2 {
        let r = emu.post_signed("/x", "msg_r", now(), &body).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    let r = emu.post_signed("/x", "msg_r", now(), &body).await;
    assert_eq!(r.status(), 200);
    let st = emu.state().await;
    assert_eq!(st["deliveries"].as_array().unwrap().len(), 1);
    assert!(st["duplicates"].as_array().unwrap().is_empty());
    assert_eq!(st["requests"], 3);
    assert_eq!(st["faults_served"], 2);
    assert_eq!(st["faults_pending"], 0);
}

#[tokio::test]
async fn fault_503_without_retry_after_and_queue_order() {
    let emu = start(Options::default()).await;
    emu.fault(json!([{"status": 503}, {"status": 500}])).await;
    let body = json!({});
    let r = emu.post_signed("/x", "m", now(), &body).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(emu.post_signed("/x", "m", now(), &body).await.status(), 500);
    assert_eq!(emu.post_signed("/x", "m", now(), &body).await.status(), 200);
}

#[tokio::test]
async fn fail_after_write_records_then_500() {
    let emu = start(Options::default()).await;
    emu.fault(json!({"fail_after_write": true})).await;
    let body = json!({"n": 1});
    let r = emu.post_signed("/x", "msg_w", now(), &body).await;
    assert_eq!(r.status(), 500);
    let st = emu.state().await;
    assert_eq!(st["deliveries"][0]["id"], "msg_w");
    // The sender retries: answered 200, recorded as a duplicate only.
    let r = emu.post_signed("/x", "msg_w", now(), &body).await;
    assert_eq!(r.status(), 200);
    let st = emu.state().await;
    assert_eq!(st["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(st["duplicates"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delay_fault_causes_client_timeout() {
    let emu = start(Options::default()).await;
    emu.fault(json!({"delay_ms": 500})).await;
    let raw = b"{}".to_vec();
    let ts = now();
    let sig = signature::sign(&emu.secret, "m", ts, &raw);
    let err = emu
        .http
        .post(format!("{}/x", emu.base))
        .header("webhook-id", "m")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(raw)
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn body_matched_fault_applies_only_to_matching_deliveries() {
    let emu = start(Options::default()).await;
    emu.fault(json!({"status": 400, "count": 2, "body_contains": "\"id\":\"bad\""}))
        .await;
    emu.fault(json!({"status": 307, "location": "http://169.254.169.254/x"}))
        .await;
    let good = json!({"id": "good"});
    let bad = json!({"id": "bad"});
    // The unconditional redirect is queued behind the conditional fault but applies first
    // to a body that does not match it.
    let r = emu.post_signed("/x", "g0", now(), &good).await;
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "http://169.254.169.254/x");
    assert_eq!(
        emu.post_signed("/x", "g1", now(), &good).await.status(),
        200
    );
    assert_eq!(emu.post_signed("/x", "b1", now(), &bad).await.status(), 400);
    assert_eq!(emu.post_signed("/x", "b2", now(), &bad).await.status(), 400);
    assert_eq!(emu.post_signed("/x", "b3", now(), &bad).await.status(), 200);
    let st = emu.state().await;
    let ids: Vec<&str> = st["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g1", "b3"]);
    assert_eq!(st["faults_pending"], 0);
}

#[tokio::test]
async fn reset_bad_faults_and_methods() {
    let emu = start(Options::default()).await;
    emu.post_signed("/x", "m", now(), &json!({})).await;
    let url = format!("{}/_emulator/faults", emu.base);
    let r = emu
        .http
        .post(&url)
        .json(&json!({"count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = emu
        .http
        .post(&url)
        .json(&json!({"status": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = emu
        .http
        .get(format!("{}/x", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let url = format!("{}/_emulator/reset", emu.base);
    assert_eq!(emu.http.post(url).send().await.unwrap().status(), 204);
    let st = emu.state().await;
    assert!(st["deliveries"].as_array().unwrap().is_empty());
    assert_eq!(st["requests"], 0);
    // After reset the same id is accepted as new.
    assert_eq!(
        emu.post_signed("/x", "m", now(), &json!({})).await.status(),
        200
    );
    assert_eq!(emu.state().await["deliveries"].as_array().unwrap().len(), 1);
}
