//! Scope enforcement of the HubSpot emulator.
//!
//! Owns which scope each API endpoint needs and the 403 `MISSING_SCOPES` answer. Every token
//! (private-app or OAuth) holds [`Options::token_scopes`](super::Options::token_scopes). Reads of
//! objects (GET, search, batch/read) need `crm.objects.{type}.read`, every other object request
//! `crm.objects.{type}.write`, and the properties API `crm.schemas.{type}.read`. The 403 body is
//! HubSpot's error body with `category: "MISSING_SCOPES"`, the needed scopes in
//! `errors[0].context.requiredGranularScopes` and the missing ones in `context.missingScopes`.
//! Paths that name no known object type need no scope (their routes answer for themselves).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::response::{err_body, json_response};
use super::schema::TYPES;

/// The scope `method path` needs, if any.
pub(super) fn required(method: &Method, path: &str) -> Option<String> {
    let objects = path
        .strip_prefix("/crm/v3/objects/")
        .or_else(|| path.strip_prefix("/crm/objects/2026-03/"));
    if let Some(rest) = objects {
        let mut parts = rest.split('/');
        let t = parts.next().filter(|t| TYPES.contains(t))?;
        let tail: Vec<&str> = parts.collect();
        let read =
            *method == Method::GET || matches!(tail.as_slice(), ["search"] | ["batch", "read"]);
        let access = if read { "read" } else { "write" };
        return Some(format!("crm.objects.{t}.{access}"));
    }
    let properties = path
        .strip_prefix("/crm/v3/properties/")
        .or_else(|| path.strip_prefix("/crm/properties/2026-03/"))?;
    let t = properties.split('/').next().filter(|t| TYPES.contains(t))?;
    Some(format!("crm.schemas.{t}.read"))
}

/// 403 `MISSING_SCOPES` unless `granted` holds the scope `method path` needs.
pub(super) fn check(granted: &[String], method: &Method, path: &str) -> Result<(), Response> {
    let Some(scope) = required(method, path) else {
        return Ok(());
    };
    if granted.contains(&scope) {
        return Ok(());
    }
    let mut body = err_body(
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about \
         required scopes here: https://developers.hubspot.com/scopes.",
    );
    body["errors"] = json!([{
        "message": "One or more of the following scopes are required.",
        "context": {"requiredGranularScopes": [scope]},
    }]);
    body["context"] = json!({"missingScopes": [scope]});
    body["links"] = json!({"scopes": "https://developers.hubspot.com/scopes"});
    Err(json_response(StatusCode::FORBIDDEN, &body))
}
