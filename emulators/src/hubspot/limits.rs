//! Request accounting, authentication and rate limits of the HubSpot emulator.
//!
//! Owns the admission decision for one API request and the `X-HubSpot-RateLimit-*` headers:
//! - every request counts towards the totals, `byPath` and the busiest burst window, OAuth token
//!   requests included (they need no authentication);
//! - `Authorization: Bearer` must name a private-app token or a live OAuth access token, else
//!   401 `INVALID_AUTHENTICATION` / `EXPIRED_AUTHENTICATION`;
//! - private-app tokens have a daily cap (429 `DAILY`), reset at midnight in the account's time
//!   zone ([`Options::time_zone`](super::Options), never UTC unless configured); search has its own
//!   per-second limiter (429 `SECONDLY`, no rate-limit headers); everything else shares a rolling
//!   window per token (429 `TEN_SECONDLY_ROLLING`);
//! - the `-Daily*` headers are only sent for private-app tokens.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::response::{error, rate_limit_response};
use super::state::Inner;

/// What an admitted request's response must report in its rate-limit headers.
pub(super) struct Grant {
    token: String,
    oauth: bool,
    daily_used: u64,
}

/// Admits or refuses one request to `path`. `Ok(None)`: admitted, no rate-limit headers (OAuth
/// token endpoint, search).
pub(super) fn admit(
    st: &mut Inner,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<Grant>, Response> {
    let now_i = Instant::now();
    count(st, path, now_i);
    if path == "/oauth/v1/token" || path == "/oauth/v3/token" {
        return Ok(None);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let oauth = authenticate(st, &token)?;
    let is_search = path.ends_with("/search");
    // Daily cap (private apps only).
    if !oauth {
        daily_gate(st, &token, Utc::now())?;
    }
    if is_search {
        search_window(st, &token, now_i)?;
    } else {
        burst_window(st, &token, oauth, now_i)?;
    }
    let daily_used = if oauth { 0 } else { charge_daily(st, &token) };
    Ok((!is_search).then_some(Grant {
        token,
        oauth,
        daily_used,
    }))
}

/// The account's day at `now`: the daily counter resets when it changes, i.e. at midnight in
/// the account's time zone.
pub(super) fn account_day(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// Refuses a private-app request at `now` when `token` used its day's budget (429 `DAILY`);
/// starts a new day's count when the account's day changed.
fn daily_gate(st: &mut Inner, token: &str, now: DateTime<Utc>) -> Result<(), Response> {
    let today = account_day(now, st.opts.time_zone);
    let day = st.daily.entry(token.to_string()).or_insert((today, 0));
    if day.0 != today {
        *day = (today, 0);
    }
    if day.1 >= st.opts.daily_limit {
        st.rate_limited += 1;
        let mut r = rate_limit_response("DAILY", "You have reached your daily limit.");
        let used = st.burst.get(token).map_or(0, VecDeque::len);
        let remaining = (st.opts.burst_limit as usize).saturating_sub(used);
        put_headers(&mut r, st, false, remaining, 0);
        return Err(r);
    }
    Ok(())
}

/// Counts an admitted private-app request against its day (after [`daily_gate`]); returns the
/// day's count.
fn charge_daily(st: &mut Inner, token: &str) -> u64 {
    let day = st.daily.get_mut(token).expect("daily_gate inserted it");
    day.1 += 1;
    day.1
}

/// Counts the request and tracks the most requests seen in any burst window.
fn count(st: &mut Inner, path: &str, now_i: Instant) {
    st.total_requests += 1;
    *st.by_path.entry(path.to_string()).or_default() += 1;
    let window = st.opts.burst_window;
    st.arrivals.push_back(now_i);
    while st
        .arrivals
        .front()
        .is_some_and(|t| now_i.duration_since(*t) >= window)
    {
        st.arrivals.pop_front();
    }
    st.max_in_window = st.max_in_window.max(st.arrivals.len());
}

/// Whether `token` is an OAuth access token (`Ok(true)`) or a private-app token (`Ok(false)`).
fn authenticate(st: &Inner, token: &str) -> Result<bool, Response> {
    let now = Utc::now();
    if st.opts.tokens.iter().any(|t| t == token) {
        if st.expired_static {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                "The OAuth token used to make this call expired 1 second(s) ago.",
            ));
        }
        return Ok(false);
    }
    let Some(issued) = st.oauth.get(token) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        ));
    };
    if issued.expires_at <= now {
        let secs = (now - issued.expires_at).num_seconds().max(0);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "EXPIRED_AUTHENTICATION",
            &format!("The OAuth token used to make this call expired {secs} second(s) ago."),
        ));
    }
    Ok(true)
}

/// The search limiter: a one-second window per token, without rate-limit headers.
fn search_window(st: &mut Inner, token: &str, now_i: Instant) -> Result<(), Response> {
    let window = st.secondly.entry(token.to_string()).or_default();
    while window
        .front()
        .is_some_and(|t| now_i.duration_since(*t) >= Duration::from_secs(1))
    {
        window.pop_front();
    }
    if window.len() >= st.opts.search_per_second as usize {
        st.rate_limited += 1;
        return Err(rate_limit_response(
            "SECONDLY",
            "You have reached your secondly limit.",
        ));
    }
    window.push_back(now_i);
    Ok(())
}

/// The rolling burst window of every other request.
fn burst_window(st: &mut Inner, token: &str, oauth: bool, now_i: Instant) -> Result<(), Response> {
    let length = st.opts.burst_window;
    let window = st.burst.entry(token.to_string()).or_default();
    while window
        .front()
        .is_some_and(|t| now_i.duration_since(*t) >= length)
    {
        window.pop_front();
    }
    if window.len() >= st.opts.burst_limit as usize {
        st.rate_limited += 1;
        let mut r = rate_limit_response(
            "TEN_SECONDLY_ROLLING",
            "You have reached your ten_secondly_rolling limit.",
        );
        let used = st.daily.get(token).map_or(0, |d| d.1);
        let daily_remaining = st.opts.daily_limit.saturating_sub(used);
        put_headers(&mut r, st, oauth, 0, daily_remaining);
        return Err(r);
    }
    window.push_back(now_i);
    Ok(())
}

/// Adds the rate-limit headers to an admitted request's response.
pub(super) fn add_headers(response: &mut Response, st: &Inner, grant: &Grant) {
    let remaining =
        st.opts.burst_limit as usize - st.burst.get(&grant.token).map_or(0, VecDeque::len);
    let daily_remaining = st.opts.daily_limit.saturating_sub(grant.daily_used);
    put_headers(response, st, grant.oauth, remaining, daily_remaining);
}

fn put_headers(r: &mut Response, st: &Inner, oauth: bool, remaining: usize, daily_rem: u64) {
    let h = r.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-hubspot-ratelimit-max", st.opts.burst_limit.to_string());
    put("x-hubspot-ratelimit-remaining", remaining.to_string());
    put(
        "x-hubspot-ratelimit-interval-milliseconds",
        st.opts.burst_window.as_millis().to_string(),
    );
    if !oauth {
        put("x-hubspot-ratelimit-daily", st.opts.daily_limit.to_string());
        put("x-hubspot-ratelimit-daily-remaining", daily_rem.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::Options;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn admitted(st: &mut Inner, now: &str) -> bool {
        let ok = daily_gate(st, "test-token", at(now)).is_ok();
        if ok {
            charge_daily(st, "test-token");
        }
        ok
    }

    #[test]
    fn the_daily_cap_resets_at_midnight_in_the_account_time_zone() {
        // Default zone: US/Eastern (UTC-5 in December).
        let mut st = Inner::new(Options {
            daily_limit: 1,
            ..Options::default()
        });
        assert_eq!(st.opts.time_zone, chrono_tz::US::Eastern);
        assert!(admitted(&mut st, "2026-12-04T23:00:00Z"));
        assert!(!admitted(&mut st, "2026-12-04T23:59:59Z"));
        // UTC midnight passes: still 4 Dec in the account's zone.
        assert!(!admitted(&mut st, "2026-12-05T00:00:01Z"));
        assert!(!admitted(&mut st, "2026-12-05T04:59:59Z"));
        // Midnight in New York.
        assert!(admitted(&mut st, "2026-12-05T05:00:00Z"));
        assert!(!admitted(&mut st, "2026-12-05T05:00:01Z"));

        // A zone east of UTC resets before UTC midnight.
        let mut st = Inner::new(Options {
            daily_limit: 1,
            time_zone: chrono_tz::Asia::Tokyo,
            ..Options::default()
        });
        assert!(admitted(&mut st, "2026-12-04T14:59:59Z"));
        assert!(!admitted(&mut st, "2026-12-04T14:59:59Z"));
        assert!(admitted(&mut st, "2026-12-04T15:00:00Z"));
        // UTC, when configured so.
        let mut st = Inner::new(Options {
            daily_limit: 1,
            time_zone: chrono_tz::UTC,
            ..Options::default()
        });
        assert!(admitted(&mut st, "2026-12-04T23:59:59Z"));
        assert!(admitted(&mut st, "2026-12-05T00:00:00Z"));
    }
}
