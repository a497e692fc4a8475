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

use crate::http::apply_settings;

use super::response::{empty, error};
use super::state::Shared;
use super::{BatchInvalidInput, Options};

/// The knobs in their wire form (camelCase names; the lag in milliseconds, the time zone by its
/// IANA name).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Knobs {
    search_index_lag_ms: u64,
    batch_invalid_input: BatchInvalidInput,
    lowercase_emails: bool,
    token_scopes: Vec<String>,
    time_zone: String,
}

impl Knobs {
    /// The knobs in force.
    fn of(opts: &Options) -> Self {
        Knobs {
            search_index_lag_ms: opts.search_index_lag.as_millis() as u64,
            batch_invalid_input: opts.batch_invalid_input,
            lowercase_emails: opts.lowercase_emails,
            token_scopes: opts.token_scopes.clone(),
            time_zone: opts.time_zone.name().to_string(),
        }
    }

    /// `opts` with these knobs (an unknown time zone changes nothing).
    fn applied_to(self, opts: &Options) -> Result<Options, String> {
        let time_zone = self
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| "timeZone: unknown time zone".to_string())?;
        Ok(Options {
            search_index_lag: Duration::from_millis(self.search_index_lag_ms),
            batch_invalid_input: self.batch_invalid_input,
            lowercase_emails: self.lowercase_emails,
            token_scopes: self.token_scopes,
            time_zone,
            ..opts.clone()
        })
    }
}

/// The knobs in force, as `POST /_emulator/settings` takes them (for `GET /_emulator/state`).
pub(super) fn settings_json(opts: &Options) -> Value {
    json!(Knobs::of(opts))
}

/// `POST /_emulator/settings`: 204 once applied (the knobs named are replaced, the others
/// kept; [`apply_settings`]).
pub(super) async fn settings(State(shared): State<Shared>, body: Bytes) -> Response {
    let mut st = shared.lock().unwrap();
    let applied = apply_settings(&Knobs::of(&st.opts), &body).and_then(|k| k.applied_to(&st.opts));
    match applied {
        Ok(opts) => {
            st.opts = opts;
            empty(StatusCode::NO_CONTENT)
        }
        Err(reason) => error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &reason),
    }
}
