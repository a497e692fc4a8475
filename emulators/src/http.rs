//! Request-reading helpers shared by the emulators.
//!
//! Owns how the emulators read what axum does not read for them the way the emulated APIs do:
//! raw (still percent-encoded) path parameters, form and query strings as maps (the last of
//! repeated keys wins), and trailing slashes, which the emulated APIs ignore.

use std::collections::HashMap;

use axum::extract::{RawPathParams, Request};
use axum::http::Uri;

/// The raw value of a path parameter, still percent-encoded (ids, types and modules are matched
/// exactly as sent); empty if the route has no such parameter.
pub(crate) fn path_param<'a>(path: &'a RawPathParams, name: &str) -> &'a str {
    path.iter()
        .find(|(key, _)| *key == name)
        .map_or("", |(_, value)| value)
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
