//! Scripted faults of the HubSpot emulator (`POST /_emulator/faults`).
//!
//! Owns the fault queue's semantics: faults are taken in FIFO order by the first request whose
//! path contains the fault's `path` (any request if unset), `count` times (default 1). A fault may
//! delay the request, answer with a status (429 with HubSpot's rate-limit body, 5xx with
//! `INTERNAL_ERROR`, other codes with `VALIDATION_ERROR`), reset the connection, let the write
//! happen and then answer 500, expire every token, or (`html`) answer with an HTML page
//! (`status`, default 200) as a proxy or a login page in front of the API would.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use super::response::{error, rate_limit_response};
use super::state::Inner;

/// One scripted fault as posted to `/_emulator/faults`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub(super) struct Fault {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    reset_connection: bool,
    #[serde(default)]
    fail_after_write: bool,
    #[serde(default)]
    expire_tokens: bool,
    #[serde(default)]
    html: bool,
}

/// What a taken fault does to the request.
pub(super) enum FaultAction {
    None,
    Respond(Response),
    Reset,
    FailAfterWrite,
}

/// Takes the first queued fault whose `path` is a substring of `path` (one use of its `count`),
/// expiring tokens if it says so; returns its delay and action.
pub(super) fn take(st: &mut Inner, path: &str) -> (Option<Duration>, FaultAction) {
    let Some(idx) = st
        .faults
        .iter()
        .position(|f| f.path.as_deref().is_none_or(|p| path.contains(p)))
    else {
        return (None, FaultAction::None);
    };
    let f = st.faults[idx].clone();
    let remaining = f.count.unwrap_or(1).saturating_sub(1);
    if remaining == 0 {
        st.faults.remove(idx);
    } else {
        st.faults[idx].count = Some(remaining);
    }
    let delay = f.delay_ms.map(Duration::from_millis);
    if f.expire_tokens {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for t in st.oauth.values_mut() {
            t.expires_at = t.expires_at.min(past);
        }
        st.expired_static = true;
    }
    let action = if f.reset_connection {
        FaultAction::Reset
    } else if f.fail_after_write {
        FaultAction::FailAfterWrite
    } else if f.html {
        FaultAction::Respond(crate::http::html_page(f.status.unwrap_or(200)))
    } else if let Some(s) = f.status {
        let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        FaultAction::Respond(if s == 429 {
            rate_limit_response(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            )
        } else {
            let cat = if s >= 500 {
                "INTERNAL_ERROR"
            } else {
                "VALIDATION_ERROR"
            };
            error(code, cat, &format!("injected fault {s}"))
        })
    } else {
        FaultAction::None
    };
    (delay, action)
}
