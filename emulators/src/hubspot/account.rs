//! The account-information API of the HubSpot emulator: `GET /account-info/v3/details` (and the
//! date-versioned `/account-info/2026-03/details`).
//!
//! Owns the account details answer: `portalId`, `accountType`, `timeZone` (the IANA name of
//! [`Options::time_zone`](super::Options), which the daily cap resets by), `companyCurrency`,
//! `additionalCurrencies`, `utcOffset` / `utcOffsetMilliseconds` (the zone's offset now),
//! `uiDomain` and `dataHostingLocation`, the fields HubSpot documents as always present. It goes
//! through authentication and the limits like every API request.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Offset, Utc};
use serde_json::json;

use super::response::json_response;
use super::state::Shared;

/// `GET /account-info/v3/details`.
pub(super) async fn details(State(shared): State<Shared>) -> Response {
    let (hub_id, tz) = {
        let st = shared.lock().unwrap();
        (st.opts.hub_id, st.opts.time_zone)
    };
    let offset_s = Utc::now()
        .with_timezone(&tz)
        .offset()
        .fix()
        .local_minus_utc();
    let sign = if offset_s < 0 { '-' } else { '+' };
    let abs = offset_s.unsigned_abs();
    json_response(
        StatusCode::OK,
        &json!({
            "portalId": hub_id,
            "accountType": "STANDARD",
            "timeZone": tz.name(),
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60),
            "utcOffsetMilliseconds": i64::from(offset_s) * 1000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }),
    )
}
