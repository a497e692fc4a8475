//! The HTTP policy every destination shares: one client set-up, one reading of `Retry-After`
//! and one back-off for repeated 429s.
//!
//! Owns what is not vendor-specific about talking HTTP to a destination. Invariants: every
//! client has a connect timeout, a whole-request timeout and the `driftless/VERSION` user
//! agent, over rustls with the ring provider; `Retry-After` is read as delay-seconds or an HTTP
//! date, and clamped to [`MAX_RETRY_AFTER`] so one header cannot park a worker for days;
//! consecutive 429s double the wait ([`Throttle`]) whatever their body says, up to
//! [`MAX_RETRY_AFTER`], and never below a `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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

/// Consecutive 429 answers of one destination account, shared by the clones of its client: the
/// n-th 429 in a row waits `floor × 2^(n-1)` (at least `Retry-After`, at most
/// [`MAX_RETRY_AFTER`]); any other answer starts over.
#[derive(Clone, Debug, Default)]
pub(crate) struct Throttle {
    streak: Arc<AtomicU32>,
}

impl Throttle {
    /// Counts an answer's status: a 429 lengthens the streak, anything else ends it.
    pub(crate) fn observe(&self, status: StatusCode) {
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.streak.fetch_add(1, Ordering::Relaxed);
        } else {
            self.streak.store(0, Ordering::Relaxed);
        }
    }

    /// 429s in a row so far.
    pub(crate) fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    /// The wait after the latest 429: `floor` doubled for each earlier 429 of the streak, at
    /// least `retry_after`, at most [`MAX_RETRY_AFTER`].
    pub(crate) fn wait(&self, floor: Duration, retry_after: Option<Duration>) -> Duration {
        let doublings = self.streak().saturating_sub(1).min(20);
        floor
            .saturating_mul(1 << doublings)
            .max(retry_after.unwrap_or_default())
            .min(MAX_RETRY_AFTER)
    }
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

    #[test]
    fn repeated_429s_double_the_wait_until_another_answer() {
        let t = Throttle::default();
        let clone = t.clone();
        let floor = Duration::from_secs(2);
        let mut waits = Vec::new();
        for _ in 0..4 {
            clone.observe(StatusCode::TOO_MANY_REQUESTS);
            waits.push(t.wait(floor, None).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16], "shared by clones");
        assert_eq!(
            t.wait(floor, Some(Duration::from_secs(60))),
            Duration::from_secs(60),
            "never below Retry-After"
        );
        for _ in 0..30 {
            t.observe(StatusCode::TOO_MANY_REQUESTS);
        }
        assert_eq!(t.wait(floor, None), MAX_RETRY_AFTER);
        t.observe(StatusCode::OK);
        t.observe(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(t.wait(floor, None), floor, "another answer starts over");
    }
}
