//! Generic-webhook receiver emulator (`driftless-emulate webhook`).
//!
//! Owns an in-memory customer endpoint that receives the generic-webhook sink's deliveries:
//! - `POST /{any path}` verifies the Standard Webhooks signature (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`) with [`Options::secret`] and
//!   [`Options::tolerance_s`] with this crate's own signature code; bad or missing
//!   signatures → 401 and the `rejected` counter; accepted deliveries are recorded with their
//!   path, parsed JSON body and headers;
//! - de-duplication on `webhook-id`: a re-delivery of an accepted id is answered 200 but recorded
//!   only in `duplicates`, so tests can assert exactly-once *effect* under at-least-once delivery;
//! - `GET /_emulator/state`, `POST /_emulator/reset`, `POST /_emulator/faults` (scripted faults,
//!   consumed in FIFO order, one per delivery request):
//!   `{"status": 429|500|503|..., "count": n, "retry_after_s": n}` answers with that status (and
//!   `Retry-After`) without recording, `{"delay_ms": n}` delays the response (timeouts),
//!   `{"fail_after_write": true}` records the delivery and then answers 500. A JSON array of
//!   such objects queues several. `count` defaults to 1. `"body_contains": "text"` makes a fault
//!   apply only to deliveries whose raw body contains `text` (others pass it by, and the next
//!   matching fault in the queue applies), e.g. a receiver refusing one specific event with 400;
//!   `"location": "url"` adds a `Location` header (scripted 3xx redirects).
//!
//! Invariants: the state lock is never held across an `.await`; a delivery is recorded at most
//! once per `webhook-id`; every non-`/_emulator` request counts towards `requests` and the
//! `max_rps` (highest number of requests seen within one wall-clock second).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use signature::Secret;

mod signature;
#[cfg(test)]
mod tests;

/// The emulator's default signing secret (`whsec_` + base64). It is the Standard Webhooks
/// reference test secret: public, for local development and tests only.
pub const DEFAULT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The default timestamp tolerance, in seconds (Standard Webhooks recommends 5 minutes).
pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// Emulator options.
#[derive(Clone, Debug)]
pub struct Options {
    /// The secret deliveries must be signed with. Defaults to [`DEFAULT_SECRET`].
    pub secret: Secret,
    /// How far (seconds, either direction) `webhook-timestamp` may be from the emulator's clock.
    /// Defaults to [`DEFAULT_TOLERANCE_S`].
    pub tolerance_s: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            secret: Secret::parse(DEFAULT_SECRET).expect("default secret is valid"),
            tolerance_s: DEFAULT_TOLERANCE_S,
        }
    }
}

/// One accepted delivery.
#[derive(Clone, Debug, Serialize)]
struct Delivery {
    id: String,
    timestamp: i64,
    path: String,
    body: Value,
    headers: BTreeMap<String, String>,
    received_at_ms: i64,
    /// How many accepted requests carried this id (1 + duplicates).
    attempts: u32,
}

/// A re-delivery of an already-recorded id.
#[derive(Clone, Debug, Serialize)]
struct Duplicate {
    id: String,
    path: String,
    received_at_ms: i64,
}

/// A request refused with 401.
#[derive(Clone, Debug, Serialize)]
struct Rejection {
    id: Option<String>,
    path: String,
    reason: String,
    received_at_ms: i64,
}

/// A scripted fault as posted to `/_emulator/faults`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fail_after_write: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<String>,
}

impl FaultSpec {
    fn matches(&self, body: &[u8]) -> bool {
        self.body_contains.as_deref().is_none_or(|needle| {
            let needle = needle.as_bytes();
            needle.is_empty() || body.windows(needle.len()).any(|w| w == needle)
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FaultsBody {
    One(FaultSpec),
    Many(Vec<FaultSpec>),
}

#[derive(Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    index: HashMap<String, usize>,
    duplicates: Vec<Duplicate>,
    rejections: Vec<Rejection>,
    faults: VecDeque<FaultSpec>,
    faults_served: u64,
    requests: u64,
    current_second: i64,
    current_count: u64,
    max_rps: u64,
}

struct Shared {
    options: Options,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type AppState = Arc<Shared>;

/// The emulator's HTTP routes.
pub fn router(options: Options) -> Router {
    let state = Arc::new(Shared {
        options,
        inner: Mutex::new(Inner::default()),
    });
    Router::new()
        .route("/_emulator/state", get(get_state))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/faults", post(add_faults).get(list_faults))
        .fallback(deliver)
        .with_state(state)
}

async fn get_state(State(s): State<AppState>) -> Json<Value> {
    let inner = s.lock();
    Json(json!({
        "deliveries": inner.deliveries,
        "duplicates": inner.duplicates,
        "rejected": inner.rejections.len(),
        "rejections": inner.rejections,
        "requests": inner.requests,
        "max_rps": inner.max_rps,
        "faults_pending": inner.faults.iter().map(|f| f.count.unwrap_or(1)).sum::<u32>(),
        "faults_served": inner.faults_served,
    }))
}

async fn reset(State(s): State<AppState>) -> StatusCode {
    *s.lock() = Inner::default();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "faults": s.lock().faults }))
}

async fn add_faults(State(s): State<AppState>, body: Bytes) -> Response {
    let specs = match serde_json::from_slice::<FaultsBody>(&body) {
        Ok(FaultsBody::One(f)) => vec![f],
        Ok(FaultsBody::Many(v)) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid fault: {e}")),
    };
    for f in &specs {
        if let Some(st) = f.status
            && StatusCode::from_u16(st).is_err()
        {
            return error(StatusCode::BAD_REQUEST, &format!("invalid status {st}"));
        }
        if f.status.is_none() && f.delay_ms.is_none() && f.fail_after_write != Some(true) {
            return error(
                StatusCode::BAD_REQUEST,
                "a fault needs status, delay_ms or fail_after_write",
            );
        }
    }
    let mut inner = s.lock();
    inner
        .faults
        .extend(specs.into_iter().filter(|f| f.count != Some(0)));
    (
        StatusCode::OK,
        Json(json!({ "queued": inner.faults.len() })),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Counts the request towards `requests`/`max_rps` and takes the first queued fault that applies
/// to `body`, if any.
fn admit(inner: &mut Inner, now_ms: i64, body: &[u8]) -> Option<FaultSpec> {
    inner.requests += 1;
    let second = now_ms.div_euclid(1000);
    if second == inner.current_second {
        inner.current_count += 1;
    } else {
        inner.current_second = second;
        inner.current_count = 1;
    }
    inner.max_rps = inner.max_rps.max(inner.current_count);

    let at = inner.faults.iter().position(|f| f.matches(body))?;
    let queued = &mut inner.faults[at];
    let fault = queued.clone();
    let remaining = queued.count.unwrap_or(1).saturating_sub(1);
    if remaining == 0 {
        inner.faults.remove(at);
    } else {
        queued.count = Some(remaining);
    }
    inner.faults_served += 1;
    Some(fault)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn deliver(
    State(s): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "deliveries must be POSTed");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let path = uri.path().to_owned();
    let received_at_ms = now_ms();
    let fault = admit(&mut s.lock(), received_at_ms, &body);

    if let Some(ms) = fault.as_ref().and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(f) = &fault
        && f.fail_after_write != Some(true)
        && let Some(status) = f.status.and_then(|st| StatusCode::from_u16(st).ok())
    {
        tracing::debug!(%path, %status, "webhook emulator: scripted fault");
        let mut resp = error(status, "scripted fault");
        if let Some(secs) = f.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(location) = &f.location
            && let Ok(v) = HeaderValue::from_str(location)
        {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }

    let id = header_str(&headers, "webhook-id").unwrap_or_default();
    let ts = header_str(&headers, "webhook-timestamp").unwrap_or_default();
    let sig = header_str(&headers, "webhook-signature").unwrap_or_default();
    let now_s = received_at_ms.div_euclid(1000);
    let verdict = signature::verify(
        &s.options.secret,
        id,
        ts,
        sig,
        &body,
        now_s,
        s.options.tolerance_s,
    );
    if let Err(e) = verdict {
        let reason = e.to_string();
        tracing::debug!(%path, %reason, "webhook emulator: rejected delivery");
        s.lock().rejections.push(Rejection {
            id: (!id.is_empty()).then(|| id.to_owned()),
            path,
            reason: reason.clone(),
            received_at_ms,
        });
        return error(StatusCode::UNAUTHORIZED, &reason);
    }

    let duplicate = {
        let mut inner = s.lock();
        if let Some(&i) = inner.index.get(id) {
            inner.deliveries[i].attempts += 1;
            inner.duplicates.push(Duplicate {
                id: id.to_owned(),
                path,
                received_at_ms,
            });
            true
        } else {
            let parsed = serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let recorded_headers = headers
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_owned(), v)
                })
                .collect();
            let idx = inner.deliveries.len();
            inner.deliveries.push(Delivery {
                id: id.to_owned(),
                timestamp: ts.trim().parse().unwrap_or_default(),
                path,
                body: parsed,
                headers: recorded_headers,
                received_at_ms,
                attempts: 1,
            });
            inner.index.insert(id.to_owned(), idx);
            false
        }
    };

    if fault.as_ref().and_then(|f| f.fail_after_write) == Some(true) {
        let status = fault
            .as_ref()
            .and_then(|f| f.status)
            .and_then(|st| StatusCode::from_u16(st).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "scripted failure after write");
    }
    (
        StatusCode::OK,
        Json(json!({ "ok": true, "id": id, "duplicate": duplicate })),
    )
        .into_response()
}
