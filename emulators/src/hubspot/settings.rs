//! Runtime knobs of the HubSpot emulator (`POST /_emulator/settings`; not part of HubSpot).
//!
//! Owns the knob names: a JSON object whose camelCase fields each replace one of the
//! [`Options`](super::Options) (`searchIndexLagMs`, `batchInvalidInput`
//! (`"whole_batch_400"` | `"multi_status_207"`), `lowercaseEmails`, `tokenScopes`, `timeZone`
//! (an IANA name: where the daily limit resets)). Invariants:
//! the request is applied whole or not at all (an unknown knob or a bad value is a 400 and
//! changes nothing); knobs are options, so `POST /_emulator/reset` keeps them;
//! `GET /_emulator/state` shows them under `settings`, in the same form.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use serde_json::{Value, json};

use super::response::{empty, error};
use super::state::Shared;
use super::{BatchInvalidInput, Options};

/// The knobs of one request (absent: unchanged).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    search_index_lag_ms: Option<u64>,
    batch_invalid_input: Option<BatchInvalidInput>,
    lowercase_emails: Option<bool>,
    token_scopes: Option<Vec<String>>,
    time_zone: Option<String>,
}

/// The knobs in force, as `POST /_emulator/settings` takes them (for `GET /_emulator/state`).
pub(super) fn settings_json(opts: &Options) -> Value {
    json!({
        "searchIndexLagMs": opts.search_index_lag.as_millis() as u64,
        "batchInvalidInput": opts.batch_invalid_input,
        "lowercaseEmails": opts.lowercase_emails,
        "tokenScopes": opts.token_scopes,
        "timeZone": opts.time_zone.name(),
    })
}

/// `POST /_emulator/settings`: 204 once applied.
pub(super) async fn settings(State(shared): State<Shared>, body: Bytes) -> Response {
    let s: Settings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string()),
    };
    let time_zone = match s.time_zone.as_deref().map(str::parse::<chrono_tz::Tz>) {
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "timeZone: unknown time zone",
            );
        }
        Some(Ok(tz)) => Some(tz),
        None => None,
    };
    let opts = &mut shared.lock().unwrap().opts;
    if let Some(tz) = time_zone {
        opts.time_zone = tz;
    }
    if let Some(ms) = s.search_index_lag_ms {
        opts.search_index_lag = Duration::from_millis(ms);
    }
    if let Some(mode) = s.batch_invalid_input {
        opts.batch_invalid_input = mode;
    }
    if let Some(lower) = s.lowercase_emails {
        opts.lowercase_emails = lower;
    }
    if let Some(scopes) = s.token_scopes {
        opts.token_scopes = scopes;
    }
    empty(StatusCode::NO_CONTENT)
}
