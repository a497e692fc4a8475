//! The HTTP policy every destination shares: one client set-up and one reading of
//! `Retry-After`.
//!
//! Owns what is not vendor-specific about talking HTTP to a destination. Invariants: every
//! client has a connect timeout, a whole-request timeout and the `driftless/VERSION` user
//! agent, over rustls with the ring provider; `Retry-After` is read as delay-seconds or an HTTP
//! date, and clamped to [`MAX_RETRY_AFTER`] so one header cannot park a worker for days.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::SinkError;

/// Longest `Retry-After` honoured; a larger value is clamped (the runner retries then).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// Connect timeout of the CRM clients.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whole-request timeout of the CRM clients.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client builder with the shared policy: timeouts and user agent (callers add their own
/// settings, e.g. the webhook sink's redirect policy and resolver).
pub(crate) fn builder(connect_timeout: Duration, timeout: Duration) -> reqwest::ClientBuilder {
    // The process installs the provider at start; tests and library users may not have.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("driftless/", env!("CARGO_PKG_VERSION")))
}

/// Builds `builder`; a failure is a bug in our settings, so it is fatal.
pub(crate) fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, SinkError> {
    builder
        .build()
        .map_err(|e| SinkError::fatal(format!("cannot build HTTP client: {e}"), "report a bug"))
}

/// The client of the CRM destinations (10 s to connect, 60 s per request).
pub(crate) fn crm_client() -> Result<reqwest::Client, SinkError> {
    build(builder(CONNECT_TIMEOUT, REQUEST_TIMEOUT))
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), relative to `now`;
/// clamped to [`MAX_RETRY_AFTER`]; a date in the past means "now".
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of a response, if it has a readable one.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, chrono::Utc::now())
}

/// A response read whole: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct JsonResponse {
    /// The status.
    pub(crate) status: StatusCode,
    /// The headers (rate-limit windows, `Retry-After`).
    pub(crate) headers: HeaderMap,
    /// The body as JSON, or `Null`.
    pub(crate) body: Value,
}

/// What went wrong with a request that got no answer: a timeout, a failed connection, or
/// another transport failure.
pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// Sends `request` and reads its answer whole. A transport failure is transient and is
/// described as `{what}: {kind}: {error}` without the URL (a query may hold a token).
pub(crate) async fn send_json(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<JsonResponse, SinkError> {
    let resp = request.send().await.map_err(|e| {
        let message = format!("{what}: {}: {}", transport_kind(&e), e.without_url());
        SinkError::transient(message, None)
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(|e| {
        let message = format!("{what}: reading the response: {}", e.without_url());
        SinkError::transient(message, None)
    })?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(JsonResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
