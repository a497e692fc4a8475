//! Zoho-shaped responses and small helpers of the Zoho emulator.
//!
//! Owns the error body (`{code, details, message, status: "error"}`, also used for per-record
//! items), Zoho's `YYYY-MM-DDTHH:MM:SS+00:00` timestamps and the answer to an injected fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A status and an optional JSON body.
pub(super) struct Resp {
    status: u16,
    body: Option<Value>,
}

impl Resp {
    pub(super) fn ok(status: u16, body: Value) -> Self {
        Resp {
            status,
            body: Some(body),
        }
    }
    pub(super) fn empty() -> Self {
        Resp {
            status: 204,
            body: None,
        }
    }
}

impl IntoResponse for Resp {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.body {
            Some(b) => (status, axum::Json(b)).into_response(),
            None => status.into_response(),
        }
    }
}

pub(super) fn err(status: u16, code: &str, message: &str, details: Value) -> Resp {
    Resp::ok(
        status,
        json!({"code": code, "details": details, "message": message, "status": "error"}),
    )
}

pub(super) fn item_err(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

pub(super) fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

pub(super) fn now_secs() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
}

/// The answer to an injected fault status.
pub(super) fn fault_response(status: u16) -> Resp {
    if status == 429 {
        err(429, "TOO_MANY_REQUESTS", "too many requests", json!({}))
    } else {
        err(status, "INTERNAL_ERROR", "Internal Server Error", json!({}))
    }
}
