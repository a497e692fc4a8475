//! Unit tests of the parent module.

use serde_json::{Value, json};

use super::*;
use crate::config::SecretSource;
use crate::sink::test_support::{
    applied, emulator_fault as fault, emulator_state as state, event, fatal, rejected, serve,
    sink_config, transient,
};
use driftless_emulators::webhook::{DEFAULT_SECRET, Options, router};

async fn start() -> String {
    serve(router(Options::default())).await
}

fn config(url: &str, mode: WebhookMode, allow_private: bool) -> ValidSink {
    let kind = SinkKind::Webhook {
        url: url.into(),
        secret: SecretSource::Env("HOOK_SECRET".into()),
        mode,
        allow_private_destinations: allow_private,
        timeout_ms: 2_000,
    };
    sink_config("hook", kind, vec![])
}

fn secret() -> Secret {
    Secret::parse(DEFAULT_SECRET).unwrap()
}

fn sink(base: &str, mode: WebhookMode) -> WebhookSink {
    WebhookSink::new(&config(&format!("{base}/hooks/in"), mode, true), secret()).unwrap()
}

/// `n` events, `0/5:{i}` carrying row `{"id": i, "email": "u{i}@x.io"}`, in one batch.
fn batch(n: u32) -> Batch<ChangeEvent> {
    let events = (0..n)
        .map(|i| {
            let mut e = event(Op::Create, json!({"id": i, "email": format!("u{i}@x.io")}));
            e.id = format!("0/5:{i}");
            e
        })
        .collect();
    crate::sink::test_support::batch(events)
}

/// The event ids of every recorded delivery (batch bodies flattened), in arrival order.
fn delivered_ids(st: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for d in st["deliveries"].as_array().unwrap() {
        let body = &d["body"];
        let events = match body["events"].as_array() {
            Some(events) => events.clone(),
            None => vec![body.clone()],
        };
        out.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    }
    out
}

#[tokio::test]
async fn batch_mode_posts_signed_batches_up_to_the_cap() {
    let base = start().await;
    let mut cfg = config(&format!("{base}/hooks/in"), WebhookMode::Batch, true);
    cfg.batch_max_events = 2;
    let mut s = WebhookSink::new(&cfg, secret()).unwrap();
    let out = s.apply(&batch(3)).await.unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    let st = state(&base).await;
    assert_eq!(st["rejected"], 0, "every signature verified: {st}");
    let deliveries = st["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "3 events, at most 2 per request");
    let d = &deliveries[0];
    assert_eq!(d["path"], "/hooks/in");
    assert_eq!(d["headers"]["content-type"], "application/json");
    assert_eq!(d["body"]["type"], BATCH_TYPE);
    assert_eq!(d["body"]["events"][0]["op"], "c");
    assert_eq!(d["body"]["events"][1]["after"]["email"], "u1@x.io");
    assert_eq!(d["id"], message_id(WebhookMode::Batch, ["0/5:0", "0/5:1"]));
    assert_eq!(delivered_ids(&st), ["0/5:0", "0/5:1", "0/5:2"]);
    let ids: Vec<(usize, &str)> = out
        .destination_ids
        .iter()
        .map(|(i, id)| (*i, id.as_str()))
        .collect();
    assert_eq!(ids[2], (2, deliveries[1]["id"].as_str().unwrap()));
}

#[tokio::test]
async fn single_mode_posts_one_signed_event_per_request() {
    let base = start().await;
    let mut s = sink(&base, WebhookMode::Single);
    let out = s.apply(&batch(3)).await.unwrap();
    assert_eq!(out.destination_ids.len(), 3);
    let st = state(&base).await;
    assert_eq!(st["rejected"], 0, "{st}");
    let deliveries = st["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    assert_eq!(deliveries[1]["body"]["id"], "0/5:1");
    assert_eq!(deliveries[1]["body"]["after"]["id"], 1);
    assert_eq!(
        deliveries[1]["id"],
        message_id(WebhookMode::Single, ["0/5:1"])
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_transient_and_retries_keep_the_id() {
    let base = start().await;
    let mut s = sink(&base, WebhookMode::Batch);
    let b = batch(2);
    fault(&base, json!({"status": 429, "retry_after_s": 7})).await;
    assert_eq!(transient(s.apply(&b).await).0, Some(Duration::from_secs(7)));
    fault(&base, json!({"status": 503})).await;
    assert_eq!(transient(s.apply(&b).await).0, None);
    fault(&base, json!({"status": 408})).await;
    assert_eq!(transient(s.apply(&b).await).0, None);
    // Written, then a 500: the retry carries the same webhook-id, so the receiver sees a
    // duplicate, not a second message.
    fault(&base, json!({"fail_after_write": true})).await;
    assert_eq!(transient(s.apply(&b).await).0, None);
    let out = s.apply(&b).await.unwrap();
    assert_eq!(out.destination_ids.len(), 2);
    let st = state(&base).await;
    assert_eq!(st["requests"], 5);
    assert_eq!(st["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(st["deliveries"][0]["attempts"], 2);
    assert_eq!(st["duplicates"][0]["id"], st["deliveries"][0]["id"]);
    assert_eq!(delivered_ids(&st), ["0/5:0", "0/5:1"]);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let base = start().await;
    let mut cfg = config(&format!("{base}/x"), WebhookMode::Batch, true);
    let SinkKind::Webhook { timeout_ms, .. } = &mut cfg.kind else {
        unreachable!()
    };
    *timeout_ms = 200;
    let mut s = WebhookSink::new(&cfg, secret()).unwrap();
    fault(&base, json!({"delay_ms": 1_000})).await;
    let (_, message) = transient(s.apply(&batch(1)).await);
    assert!(message.contains("timeout"), "{message}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut s = sink(&format!("http://127.0.0.1:{port}"), WebhookMode::Batch);
    transient(s.apply(&batch(1)).await);
}

/// Applies `batch(n)` in `mode` to a fresh receiver that answers `status` to every request
/// carrying event `0/5:{refused}`; the receiver's base URL and the outcome.
async fn apply_refusing(mode: WebhookMode, status: u16, refused: u32, n: u32) -> (String, Outcome) {
    let base = start().await;
    let mut s = sink(&base, mode);
    let body_contains = format!("\"id\":\"0/5:{refused}\"");
    fault(
        &base,
        json!({"status": status, "count": 100, "body_contains": body_contains}),
    )
    .await;
    let out = s.apply(&batch(n)).await.unwrap();
    (base, out)
}

#[tokio::test]
async fn a_refused_event_is_bisected_out_of_the_batch() {
    let (base, out) = apply_refusing(WebhookMode::Batch, 400, 3, 5).await;
    assert_eq!(rejected(&out), [(3, "HTTP_400")]);
    assert_eq!(applied(&out), [0, 1, 2, 4]);
    let st = state(&base).await;
    let mut ids = delivered_ids(&st);
    ids.sort();
    assert_eq!(ids, ["0/5:0", "0/5:1", "0/5:2", "0/5:4"]);
    // [0..5] → [0,1] ok, [2,3,4] → [2] ok, [3,4] → [3] refused, [4] ok.
    assert_eq!(st["requests"], 7);
    assert_eq!(st["faults_served"], 4);

    // Single mode: only that event is refused.
    let (base, out) = apply_refusing(WebhookMode::Single, 422, 1, 3).await;
    assert_eq!(rejected(&out), [(1, "HTTP_422")]);
    assert_eq!(delivered_ids(&state(&base).await), ["0/5:0", "0/5:2"]);
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let base = start().await;
    let port = base.rsplit(':').next().unwrap();
    // An IP literal is refused when the sink is built.
    let cfg = config(&format!("{base}/x"), WebhookMode::Batch, false);
    let (message, hint) = fatal(WebhookSink::new(&cfg, secret()));
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(hint.contains("allow_private_destinations"), "{hint}");
    // A name is refused when it resolves (here to loopback), before any connection.
    let cfg = config(
        &format!("http://localhost:{port}/x"),
        WebhookMode::Batch,
        false,
    );
    let mut s = WebhookSink::new(&cfg, secret()).unwrap();
    let (message, hint) = fatal(s.apply(&batch(1)).await);
    assert!(message.contains("localhost"), "{message}");
    assert!(hint.contains("allow_private_destinations"), "{hint}");
    assert_eq!(state(&base).await["requests"], 0, "no request was made");
    // Allowed explicitly: delivered.
    let cfg = config(
        &format!("http://localhost:{port}/x"),
        WebhookMode::Batch,
        true,
    );
    let mut s = WebhookSink::new(&cfg, secret()).unwrap();
    s.apply(&batch(1)).await.unwrap();
    assert_eq!(
        state(&base).await["deliveries"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let target = start().await;
    let redirector = start().await;
    let port = target.rsplit(':').next().unwrap();
    for location in [
        format!("http://localhost:{port}/x"),
        "http://169.254.169.254/latest/meta-data".to_string(),
    ] {
        fault(&redirector, json!({"status": 307, "location": location})).await;
        let mut s = sink(&redirector, WebhookMode::Batch);
        let (message, hint) = fatal(s.apply(&batch(1)).await);
        assert!(message.contains("307"), "{message}");
        assert!(hint.contains("redirects are never followed"), "{hint}");
    }
    assert_eq!(state(&target).await["requests"], 0);
    assert!(
        state(&redirector).await["deliveries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn auth_failures_and_gone_endpoints_are_fatal() {
    let base = start().await;
    // Signed with another secret: the receiver answers 401.
    let cfg = config(&format!("{base}/x"), WebhookMode::Batch, true);
    let mut s = WebhookSink::new(&cfg, Secret::parse("whsec_c2VjcmV0").unwrap()).unwrap();
    let (message, hint) = fatal(s.apply(&batch(1)).await);
    assert!(message.contains("401"), "{message}");
    assert!(hint.contains("secret_env"), "{hint}");
    assert!(!message.contains("c2VjcmV0") && !hint.contains("c2VjcmV0"));
    assert_eq!(state(&base).await["rejected"], 1);
    let mut s = sink(&base, WebhookMode::Batch);
    fault(&base, json!({"status": 410})).await;
    let (message, hint) = fatal(s.apply(&batch(1)).await);
    assert!(message.contains("410 Gone"), "{message}");
    assert!(hint.contains("re-enable"), "{hint}");
    fault(&base, json!({"status": 404})).await;
    let (_, hint) = fatal(s.apply(&batch(1)).await);
    assert!(hint.contains("url"), "{hint}");
}

#[tokio::test]
async fn ignored_deletes_send_nothing() {
    let base = start().await;
    let mut cfg = config(&format!("{base}/x"), WebhookMode::Batch, true);
    cfg.on_delete = OnDelete::Ignore;
    let mut s = WebhookSink::new(&cfg, secret()).unwrap();
    let mut b = batch(2);
    b.entries[0].item.op = Op::Delete;
    let out = s.apply(&b).await.unwrap();
    assert_eq!(out.destination_ids.len(), 1);
    assert_eq!(delivered_ids(&state(&base).await), ["0/5:1"]);
    b.entries[1].item.op = Op::Delete;
    assert_eq!(s.apply(&b).await.unwrap(), Outcome::default());
    assert_eq!(state(&base).await["requests"], 1);
}

#[test]
fn message_ids_depend_only_on_mode_and_event_ids() {
    let a = message_id(WebhookMode::Batch, ["0/1:0", "0/1:1"]);
    assert_eq!(a, message_id(WebhookMode::Batch, ["0/1:0", "0/1:1"]));
    assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    assert_ne!(a, message_id(WebhookMode::Batch, ["0/1:0"]));
    assert_ne!(a, message_id(WebhookMode::Batch, ["0/1:0\n0/1:1"]));
    assert_ne!(
        message_id(WebhookMode::Batch, ["0/1:0"]),
        message_id(WebhookMode::Single, ["0/1:0"])
    );
}
