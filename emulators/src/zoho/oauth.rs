//! OAuth token endpoint of the Zoho emulator.
//!
//! Owns the `refresh_token` grant: the configured client id and secret and a known refresh token
//! mint an access token living [`Options::token_ttl`](super::Options::token_ttl) with the scopes
//! the `grantedScopes` knob grants at that moment. A wrong client id is `invalid_client`, a wrong
//! secret `invalid_client_secret`, an unknown refresh token `invalid_code`. Zoho's limits
//! apply: at most 10 mints per refresh token per 10 minutes (else 400 `Access Denied`) and at most
//! 30 live access tokens per refresh token (the oldest are evicted). Other errors are HTTP 200
//! with `{"error": ..}`, as Zoho answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use serde_json::json;

use super::response::Resp;
use super::state::{App, Token};
use crate::http::{form, query};

/// `/oauth/v2/token` (any method): parameters from the query string and a form body.
pub(super) async fn token(State(app): State<App>, uri: Uri, body: Bytes) -> Resp {
    let mut params = query(&uri);
    params.extend(form(&String::from_utf8_lossy(&body)));
    mint(&app, &params)
}

fn mint(app: &App, p: &HashMap<String, String>) -> Resp {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return Resp::ok(200, json!({"error": "unsupported_grant_type"}));
    }
    if get("client_id") != app.opts.client_id {
        return Resp::ok(200, json!({"error": "invalid_client"}));
    }
    if get("client_secret") != app.opts.client_secret {
        return Resp::ok(200, json!({"error": "invalid_client_secret"}));
    }
    let rt = get("refresh_token").to_string();
    if !app.opts.refresh_tokens.contains(&rt) {
        return Resp::ok(200, json!({"error": "invalid_code"}));
    }
    let mut st = app.lock();
    let scopes = st.knobs.granted_scopes.clone();
    let now = Instant::now();
    let window = Duration::from_secs(600);
    let mints = st.mints.entry(rt.clone()).or_default();
    while mints
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        mints.pop_front();
    }
    if mints.len() >= 10 {
        return Resp::ok(
            400,
            json!({"error": "Access Denied", "error_description":
                "You have made too many requests continuously. Please try again after some time.",
                "status": "failure"}),
        );
    }
    mints.push_back(now);
    // ≤30 live access tokens per refresh token: evict the oldest.
    let mut live: Vec<(String, Instant)> = st
        .tokens
        .iter()
        .filter(|(_, t)| t.refresh.as_deref() == Some(rt.as_str()))
        .map(|(k, t)| (k.clone(), t.issued))
        .collect();
    if live.len() >= 30 {
        live.sort_by_key(|(_, i)| *i);
        for (k, _) in live.iter().take(live.len() - 29) {
            st.tokens.remove(k);
        }
    }
    let access = format!(
        "1000.{:032x}.{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    st.tokens.insert(
        access.clone(),
        Token {
            refresh: Some(rt),
            scopes: Some(scopes.clone()),
            expires: now + app.opts.token_ttl,
            issued: now,
        },
    );
    Resp::ok(
        200,
        json!({"access_token": access, "scope": scopes.join(" "),
               "api_domain": app.opts.api_domain, "token_type": "Bearer",
               "expires_in": app.opts.token_ttl.as_secs()}),
    )
}
