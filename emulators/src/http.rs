//! Request-reading helpers shared by the emulators.
//!
//! Owns how the emulators read what axum does not read for them the way they always have:
//! path parameters exactly as sent (still percent-encoded: ids, types and modules are matched
//! as text), form and query strings as maps (the last of repeated keys wins), and trailing
//! slashes, which the emulated APIs ignore; how a runtime settings body changes an
//! emulator's knobs ([`apply_settings`]); and the HTML page a scripted `html` fault answers
//! with ([`html_page`]).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::Uri;
use axum::http::request::Parts;

/// The matched route's path parameters as sent, still percent-encoded (axum's own extractors
/// decode them).
pub(crate) struct RawPath {
    params: Vec<(String, String)>,
}

impl RawPath {
    /// The value of parameter `name`; empty if the route has no such parameter.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawPath {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let params = template
            .split('/')
            .zip(parts.uri.path().split('/'))
            .filter_map(|(pattern, value)| {
                let name = pattern.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        Ok(RawPath { params })
    }
}

/// `application/x-www-form-urlencoded` text (a form body or a query string) as a map.
pub(crate) fn form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// The query string of `uri` as a map.
pub(crate) fn query(uri: &Uri) -> HashMap<String, String> {
    form(uri.query().unwrap_or(""))
}

/// Drops trailing slashes from a path under `prefix` (keeping the query), as long as something
/// follows the prefix, so that `/x/` is routed as `/x`.
pub(crate) fn trim_trailing_slashes(request: &mut Request, prefix: &str) {
    let uri = request.uri();
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.len() < prefix.len() || !path.starts_with(prefix) {
        return;
    }
    let rebuilt = match uri.query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_string(),
    };
    if let Ok(rebuilt) = rebuilt.parse::<Uri>() {
        *request.uri_mut() = rebuilt;
    }
}

/// Applies a `POST /_emulator/settings` body (a JSON object of knobs by their camelCase names)
/// to `current`: the knobs named are replaced, the others kept. An unknown knob, a value of the
/// wrong type or a body that is not an object is refused with a reason (nothing is changed).
pub(crate) fn apply_settings<T>(current: &T, body: &[u8]) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let serde_json::Value::Object(changes) =
        serde_json::from_slice(body).map_err(|e| format!("settings body: {e}"))?
    else {
        return Err("settings body: expected a JSON object of knobs".into());
    };
    let mut knobs = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(knobs)) => knobs,
        _ => return Err("settings: knobs are not an object".into()),
    };
    for (name, value) in changes {
        let Some(slot) = knobs.get_mut(&name) else {
            return Err(format!("unknown knob {name:?}"));
        };
        *slot = value;
    }
    serde_json::from_value(serde_json::Value::Object(knobs)).map_err(|e| format!("settings: {e}"))
}

/// What a proxy, a load balancer or a login page in front of an API answers instead of JSON:
/// an HTML page (`text/html`) with `status`, for the scripted `html` faults.
pub(crate) fn html_page(status: u16) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let code =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code}</title></head>\n<body><h1>{code}</h1>\n\
         <p>The server could not answer your request.</p></body></html>\n"
    );
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}
