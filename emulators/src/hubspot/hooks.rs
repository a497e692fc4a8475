//! Webhook subscription and delivery of the HubSpot emulator.
//!
//! Owns `POST|GET|DELETE /_emulator/webhooks` (one app's subscription at a time; see
//! [`HookConfig`]), the queueing of events as writes happen ([`emit`], called with the state lock
//! held) and the background dispatcher that POSTs them. Delivery follows HubSpot: JSON arrays of
//! at most `max_batch` events, signed v1 and v3 by this crate's [`signature`](super::signature)
//! code, one request at a time; retries on connect failure, timeout or any status outside 2xx and
//! 400/401/403/404/405, up to `max_retries`, backing off `retry_base_ms * 2^(n-1)` (or a 429's
//! `Retry-After` seconds) with `attemptNumber` counting up. Invariant: a dispatcher stops as soon
//! as its subscription is deleted, replaced or reset (it compares its wake handle with the
//! current one) and never holds the state lock across an `.await`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::records::WriteSource;
use super::records::singular;
use super::response::{empty, error, json_response};
use super::schema::TYPES;
use super::signature::{sign_v1, sign_v3};
use super::state::{Inner, Shared};

const HOOK_KINDS: [&str; 3] = ["creation", "propertyChange", "deletion"];

/// Subscription ids are `SUBSCRIPTION_BASE + index in HookConfig::events`.
const SUBSCRIPTION_BASE: u64 = 100_000;

fn all_hook_events() -> Vec<String> {
    TYPES
        .iter()
        .flat_map(|t| {
            HOOK_KINDS
                .iter()
                .map(move |k| format!("{}.{k}", singular(t)))
        })
        .collect()
}

/// `POST /_emulator/webhooks` body: one app's webhook subscription.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct HookConfig {
    target_url: String,
    client_secret: String,
    #[serde(default = "HookConfig::default_app_id")]
    app_id: u64,
    /// `{contact,company,deal}.{creation,propertyChange,deletion}`; default all nine.
    #[serde(default = "all_hook_events")]
    events: Vec<String>,
    /// `propertyChange` only for these properties (HubSpot subscribes per property); default all.
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default = "HookConfig::default_max_batch")]
    max_batch: usize,
    /// Randomise delivery order within and across requests.
    #[serde(default)]
    shuffle: bool,
    /// Every nth emitted event is delivered twice (0 = never).
    #[serde(default)]
    duplicate_every: u64,
    /// Every nth emitted event is never delivered (0 = never); wins over `duplicate_every`.
    #[serde(default)]
    drop_every: u64,
    /// Retry n waits `retry_base_ms * 2^(n-1)` (HubSpot: minutes).
    #[serde(default = "HookConfig::default_retry_base_ms")]
    retry_base_ms: u64,
    #[serde(default = "HookConfig::default_max_retries")]
    max_retries: u32,
    /// Per-request timeout; a timeout is retried.
    #[serde(default = "HookConfig::default_timeout_ms")]
    timeout_ms: u64,
    /// Hold the first ready event this long so more events share its request.
    #[serde(default)]
    batch_window_ms: u64,
}

impl HookConfig {
    fn default_app_id() -> u64 {
        1
    }
    fn default_max_batch() -> usize {
        100
    }
    fn default_retry_base_ms() -> u64 {
        1000
    }
    fn default_max_retries() -> u32 {
        10
    }
    fn default_timeout_ms() -> u64 {
        5000
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
struct HookStats {
    /// POST requests sent (including retries and failed connections).
    requests: u64,
    /// Events in requests answered 2xx (a duplicated event counts twice).
    events_delivered: u64,
    /// Event re-deliveries scheduled after a failed request.
    retries: u64,
    /// Events given up on: a 400/401/403/404/405 reply or retries exhausted.
    failures: u64,
    /// Events never queued because of `drop_every`.
    dropped: u64,
    /// Extra copies queued because of `duplicate_every`.
    duplicated: u64,
    /// Status of the latest reply (none after a connection failure or timeout).
    last_status: Option<u16>,
}

struct PendingEvent {
    event: Value,
    attempt: u32,
    ready_at: Instant,
}

pub(super) struct Hooks {
    cfg: HookConfig,
    stats: HookStats,
    pending: Vec<PendingEvent>,
    emitted: u64,
    /// Wakes the dispatcher; its identity also tells a dispatcher whether it is still current.
    wake: Arc<tokio::sync::Notify>,
}

/// Queues a webhook event if the subscription wants it (called with the state lock held).
pub(super) fn emit(
    st: &mut Inner,
    t: &str,
    kind: &str,
    object_id: u64,
    prop: Option<(&str, &str)>,
    src: &WriteSource,
    occurred_at: i64,
) {
    let Some(h) = st.hooks.as_mut() else { return };
    let sub_type = format!("{}.{kind}", singular(t));
    let Some(idx) = h.cfg.events.iter().position(|e| *e == sub_type) else {
        return;
    };
    if let (Some((name, _)), Some(only)) = (prop, &h.cfg.properties)
        && !only.iter().any(|p| p == name)
    {
        return;
    }
    let event_id = st.next_event_id;
    st.next_event_id += 1;
    let mut e = json!({
        "eventId": event_id,
        "subscriptionId": SUBSCRIPTION_BASE + idx as u64,
        "portalId": st.opts.hub_id,
        "appId": h.cfg.app_id,
        "occurredAt": occurred_at,
        "subscriptionType": sub_type,
        "attemptNumber": 0,
        "objectId": object_id,
    });
    match prop {
        Some((name, value)) => {
            e["propertyName"] = json!(name);
            e["propertyValue"] = json!(value);
        }
        None if kind == "creation" => e["changeFlag"] = json!("CREATED"),
        None => e["changeFlag"] = json!("DELETED"),
    }
    e["changeSource"] = json!(src.source_type);
    e["sourceId"] = json!(src.source_id);
    h.emitted += 1;
    let n = h.emitted;
    if h.cfg.drop_every > 0 && n.is_multiple_of(h.cfg.drop_every) {
        h.stats.dropped += 1;
        return;
    }
    let now = Instant::now();
    if h.cfg.duplicate_every > 0 && n.is_multiple_of(h.cfg.duplicate_every) {
        h.stats.duplicated += 1;
        h.pending.push(PendingEvent {
            event: e.clone(),
            attempt: 0,
            ready_at: now,
        });
    }
    h.pending.push(PendingEvent {
        event: e,
        attempt: 0,
        ready_at: now,
    });
    h.wake.notify_one();
}

fn hooks_json(h: &Hooks) -> Value {
    let subscriptions: Vec<Value> = h
        .cfg
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"id": SUBSCRIPTION_BASE + i as u64, "eventType": e}))
        .collect();
    json!({
        "config": h.cfg,
        "subscriptions": subscriptions,
        "stats": h.stats,
        "pending": h.pending.len(),
    })
}

/// `POST /_emulator/webhooks`: validates and installs a subscription, replacing any previous
/// one (its undelivered events are discarded), and starts its dispatcher.
pub(super) async fn configure(State(shared): State<Shared>, body: Bytes) -> Response {
    let mut st = shared.lock().unwrap();
    let cfg: HookConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string()),
    };
    let known = all_hook_events();
    if let Some(bad) = cfg.events.iter().find(|e| !known.contains(e)) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("unsupported event type {bad}; expected one of {known:?}"),
        );
    }
    if cfg.max_batch == 0 || url::Url::parse(&cfg.target_url).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "max_batch must be positive and target_url an absolute URL",
        );
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let h = Hooks {
        cfg,
        stats: HookStats::default(),
        pending: vec![],
        emitted: 0,
        wake: wake.clone(),
    };
    let v = hooks_json(&h);
    stop_hooks(&mut st);
    st.hooks = Some(h);
    drop(st);
    tokio::spawn(deliver_hooks(shared, wake));
    json_response(StatusCode::OK, &v)
}

/// `GET /_emulator/webhooks`: the subscription, its subscription ids and delivery statistics.
pub(super) async fn describe(State(shared): State<Shared>) -> Response {
    match &shared.lock().unwrap().hooks {
        Some(h) => json_response(StatusCode::OK, &hooks_json(h)),
        None => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "no webhook subscription",
        ),
    }
}

/// `DELETE /_emulator/webhooks`.
pub(super) async fn remove(State(shared): State<Shared>) -> Response {
    stop_hooks(&mut shared.lock().unwrap());
    empty(StatusCode::NO_CONTENT)
}

/// Removes the subscription and wakes its dispatcher so that it exits now.
pub(super) fn stop_hooks(st: &mut Inner) {
    if let Some(h) = st.hooks.take() {
        h.wake.notify_one();
    }
}

enum Step {
    Stop,
    Wait(Duration),
    Send(HookConfig, Vec<PendingEvent>),
}

/// Picks the next request's events, or says how long to wait (lock held briefly).
fn next_step(shared: &Shared, me: &Arc<tokio::sync::Notify>) -> Step {
    let mut st = shared.lock().unwrap();
    let Some(h) = st.hooks.as_mut().filter(|h| Arc::ptr_eq(&h.wake, me)) else {
        return Step::Stop;
    };
    let now = Instant::now();
    let idle = Duration::from_secs(3600);
    let Some(first_ready) = h.pending.iter().map(|p| p.ready_at).min() else {
        return Step::Wait(idle);
    };
    if first_ready > now {
        return Step::Wait(first_ready - now);
    }
    let window = Duration::from_millis(h.cfg.batch_window_ms);
    if first_ready + window > now {
        return Step::Wait(first_ready + window - now);
    }
    let mut ready: Vec<usize> = (0..h.pending.len())
        .filter(|i| h.pending[*i].ready_at <= now)
        .collect();
    if h.cfg.shuffle {
        rand::seq::SliceRandom::shuffle(ready.as_mut_slice(), &mut rand::rng());
    }
    ready.truncate(h.cfg.max_batch);
    let mut take = ready.clone();
    take.sort_unstable_by(|a, b| b.cmp(a));
    let mut batch: Vec<(usize, PendingEvent)> =
        take.into_iter().map(|i| (i, h.pending.remove(i))).collect();
    // Keep the picked order (queue order, or the shuffled order).
    batch.sort_by_key(|(i, _)| ready.iter().position(|r| r == i));
    Step::Send(h.cfg.clone(), batch.into_iter().map(|(_, p)| p).collect())
}

/// How one delivery request ended.
enum Outcome {
    Delivered(u16),
    Rejected(u16),
    Retry(Option<u16>, Option<Duration>),
}

/// The background dispatcher of one subscription: POSTs batches, retries as the module doc says, and stops
/// when the subscription is deleted, replaced or reset.
async fn deliver_hooks(shared: Shared, me: Arc<tokio::sync::Notify>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook dispatcher cannot build an HTTP client");
            return;
        }
    };
    loop {
        let (cfg, batch) = match next_step(&shared, &me) {
            Step::Stop => return,
            Step::Wait(d) => {
                tokio::select! {
                    _ = me.notified() => {}
                    _ = tokio::time::sleep(d) => {}
                }
                continue;
            }
            Step::Send(cfg, batch) => (cfg, batch),
        };
        let events: Vec<Value> = batch
            .iter()
            .map(|p| {
                let mut e = p.event.clone();
                e["attemptNumber"] = json!(p.attempt);
                e
            })
            .collect();
        let body = serde_json::to_vec(&events).expect("json");
        let ts = Utc::now().timestamp_millis();
        let req = client
            .post(&cfg.target_url)
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client) - WebhooksExecutorDaemon-executor",
            )
            .header("X-HubSpot-Signature-Version", "v1")
            .header("X-HubSpot-Signature", sign_v1(&cfg.client_secret, &body))
            .header(
                "X-HubSpot-Signature-v3",
                sign_v3(&cfg.client_secret, "POST", &cfg.target_url, &body, ts),
            )
            .header("X-HubSpot-Request-Timestamp", ts.to_string())
            .header("X-HubSpot-Timeout-Millis", cfg.timeout_ms.to_string())
            .body(body);
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let _ = resp.bytes().await;
                match status {
                    200..=299 => Outcome::Delivered(status),
                    400 | 401 | 403 | 404 | 405 => Outcome::Rejected(status),
                    429 => Outcome::Retry(Some(status), retry_after),
                    _ => Outcome::Retry(Some(status), None),
                }
            }
            Err(_) => Outcome::Retry(None, None),
        };
        let mut st = shared.lock().unwrap();
        let Some(h) = st.hooks.as_mut().filter(|h| Arc::ptr_eq(&h.wake, &me)) else {
            return;
        };
        h.stats.requests += 1;
        let n = batch.len() as u64;
        match outcome {
            Outcome::Delivered(s) => {
                h.stats.last_status = Some(s);
                h.stats.events_delivered += n;
            }
            Outcome::Rejected(s) => {
                h.stats.last_status = Some(s);
                h.stats.failures += n;
            }
            Outcome::Retry(s, retry_after) => {
                h.stats.last_status = s;
                let now = Instant::now();
                for mut p in batch {
                    if p.attempt >= h.cfg.max_retries {
                        h.stats.failures += 1;
                        continue;
                    }
                    p.attempt += 1;
                    let backoff = Duration::from_millis(
                        h.cfg
                            .retry_base_ms
                            .saturating_mul(1u64 << (p.attempt - 1).min(20)),
                    );
                    p.ready_at = now + retry_after.unwrap_or(backoff);
                    h.stats.retries += 1;
                    h.pending.push(p);
                }
            }
        }
    }
}
