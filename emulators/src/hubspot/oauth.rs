//! OAuth token endpoint of the HubSpot emulator.
//!
//! Owns the `refresh_token` grant: a form-encoded request with the app's
//! [`Options::client_id`](super::Options::client_id) and
//! [`Options::client_secret`](super::Options::client_secret) naming one of
//! [`Options::refresh_tokens`](super::Options::refresh_tokens) gets a fresh access token that
//! expires after [`Options::oauth_token_ttl`](super::Options::oauth_token_ttl) and holds
//! [`Options::token_scopes`](super::Options::token_scopes) (listed in `scopes`); anything else is
//! a 400 with HubSpot's `status` (`BAD_GRANT_TYPE`, `BAD_CLIENT_ID`, `BAD_CLIENT_SECRET`,
//! `BAD_REFRESH_TOKEN`, checked in that order) and `category: "VALIDATION_ERROR"`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::json;

use super::response::{error, json_response, uuid};
use super::state::{Inner, OauthToken, Shared};
use crate::http::form;

/// `POST /oauth/v1/token` and `/oauth/v3/token` (any other method: 405).
pub(super) async fn token(State(shared): State<Shared>, method: Method, body: Bytes) -> Response {
    issue(&mut shared.lock().unwrap(), &method, &body)
}

fn issue(st: &mut Inner, method: &Method, body: &Bytes) -> Response {
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "VALIDATION_ERROR",
            "use POST",
        );
    }
    let form: HashMap<String, String> = form(&String::from_utf8_lossy(body));
    let oauth_err = |status: &str, message: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"status": status, "message": message, "correlationId": uuid(),
                    "category": "VALIDATION_ERROR"}),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_err("BAD_GRANT_TYPE", "grant_type must be refresh_token");
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != st.opts.client_id {
        return oauth_err("BAD_CLIENT_ID", "missing or unknown client id");
    }
    if field("client_secret") != st.opts.client_secret {
        return oauth_err("BAD_CLIENT_SECRET", "missing or invalid client secret");
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    if !st.opts.refresh_tokens.contains(&rt) {
        return oauth_err("BAD_REFRESH_TOKEN", "missing or invalid refresh token");
    }
    let access = format!("oauth-{}", uuid().replace('-', ""));
    let ttl = st.opts.oauth_token_ttl;
    let expires_at = Utc::now() + chrono::Duration::milliseconds(ttl.as_millis() as i64);
    st.oauth.insert(access.clone(), OauthToken { expires_at });
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "refresh_token": rt,
            "expires_in": ttl.as_secs(),
            "token_type": "bearer",
            "token_use": "access_token",
            "hub_id": st.opts.hub_id,
            "scopes": st.opts.token_scopes,
        }),
    )
}
