//! HubSpot-shaped responses and small request-reading helpers of the HubSpot emulator.
//!
//! Owns the error body (`{status: "error", message, correlationId, category}`), the 429 body with
//! its `policyName`, the correlation-id header, timestamps in HubSpot's millisecond ISO-8601
//! form, and the reading of JSON bodies and comma-separated or JSON lists of names.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

pub(super) fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

pub(super) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

pub(super) fn err_body(category: &str, message: &str) -> Value {
    json!({"status": "error", "message": message, "correlationId": uuid(), "category": category})
}

pub(super) fn error(status: StatusCode, category: &str, message: &str) -> Response {
    json_response(status, &err_body(category, message))
}

pub(super) fn rate_limit_response(policy: &str, message: &str) -> Response {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": uuid(), "policyName": policy, "requestId": uuid()}),
    )
}

pub(super) fn csv(q: &HashMap<String, String>, key: &str) -> Option<Vec<String>> {
    q.get(key).map(|s| {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    })
}

pub(super) fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    })
}

/// Sets a fresh `X-HubSpot-Correlation-Id`.
pub(super) fn add_correlation_id(r: &mut Response) {
    let id = uuid();
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-hubspot-correlation-id", v);
    }
}

/// A request body as JSON, or HubSpot's 400 for invalid JSON.
pub(super) fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Invalid input JSON: {e}"),
        )
    })
}
