//! HubSpot's rate limits on our side, shared by every client of one account in the process.
//!
//! Owns [`RateLimiter`] (a pure sliding window), the process-wide registry of [`Account`]s and
//! the daily-reset computation ([`daily_reset`]).
//!
//! Invariants:
//! - one [`Account`] per HubSpot account in the process, keyed by the base URL and the
//!   credentials: the outbound sink, the two-way inbound worker, reconciliation, `verify` and
//!   every other sink configured with the same token (or OAuth client and refresh token) take
//!   their slots from the same burst limiter, and searches also from the same search limiter
//!   (HubSpot: 5 per second per token; we allow [`SEARCHES_PER_SECOND`]), so together they
//!   stay inside HubSpot's budget;
//! - the key is the base URL plus a SHA-256 prefix of the credentials, never a secret, so it may
//!   be logged;
//! - the limiters' locks are held for bookkeeping only, never across an `.await`; a request
//!   counts from the moment it takes its slot, and from its answer on once answered
//!   ([`RateLimiter::answered`]), so concurrent clients never overshoot together;
//! - a `DAILY` 429 parks every client of the account until the next midnight in the account's
//!   time zone (read once from `GET /account-info/v3/details`), plus [`RESET_GRACE`]; while the
//!   zone is unknown (unreadable, or the read failed) the park lasts [`PROBE_EVERY`], after
//!   which the next request probes. Never at UTC midnight unless the account lives in UTC.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use reqwest::header::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::sinks::Auth;

/// HubSpot's default burst window and limit (private apps, free tier).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_MAX: u32 = 100;
/// Searches we send per second per account (HubSpot allows 5).
pub(crate) const SEARCHES_PER_SECOND: u32 = 4;
/// Parked this long after midnight, so that a clock a little ahead of HubSpot's does not land
/// on a limit that has not reset yet.
pub(crate) const RESET_GRACE: Duration = Duration::from_secs(60);
/// Park after a `DAILY` 429 while the account's time zone is unknown; also how often the zone
/// is read again after a failed read.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(3600);

/// Client-side sliding-window limiter. Pure: time is passed in.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: u32,
    window: Duration,
    /// Send (then answer) times of the requests in the window, oldest first.
    sent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

/// A request's slot in a [`RateLimiter`] (its recorded time), for [`RateLimiter::answered`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(Instant);

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(DEFAULT_MAX, DEFAULT_WINDOW)
    }
}

impl RateLimiter {
    /// A limiter allowing `max` requests per rolling `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        RateLimiter {
            max: max.max(1),
            window,
            sent: VecDeque::new(),
            blocked_until: None,
        }
    }

    fn in_window(&self, now: Instant) -> impl Iterator<Item = &Instant> {
        self.sent
            .iter()
            .filter(move |t| now.saturating_duration_since(**t) < self.window)
    }

    /// How long to wait before the next request may be sent (None: send now).
    pub(crate) fn wait_needed(&self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.blocked_until
            && until > now
        {
            return Some(until - now);
        }
        let mut in_window = self.in_window(now);
        let oldest = in_window.next().copied();
        let count = oldest.map_or(0, |_| 1 + in_window.count());
        if count >= self.max as usize {
            let oldest = oldest.expect("count > 0");
            return Some((oldest + self.window).saturating_duration_since(now));
        }
        None
    }

    /// Records a request sent at `now` (it counts while in flight).
    pub(crate) fn record(&mut self, now: Instant) -> Ticket {
        let window = self.window;
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.sent.pop_front();
        }
        self.insert(now);
        Ticket(now)
    }

    fn insert(&mut self, at: Instant) {
        let pos = self.sent.partition_point(|t| *t <= at);
        self.sent.insert(pos, at);
    }

    /// The request of `ticket` was answered at `now`: it is counted from then on. HubSpot
    /// counted it somewhere between our send and its answer, so stamping it with the answer
    /// time makes our window roll no earlier than HubSpot's; stamping it with the send time
    /// let a request that reached HubSpot faster than an earlier one land 429s just as the
    /// window rolled.
    pub(crate) fn answered(&mut self, ticket: Ticket, now: Instant) {
        if now <= ticket.0 {
            return;
        }
        if let Some(pos) = self.sent.iter().position(|t| *t == ticket.0) {
            self.sent.remove(pos);
            self.insert(now);
        }
    }

    /// Takes HubSpot's rate-limit headers as the truth: `-Max` and `-Interval-Milliseconds`
    /// replace the limits; `-Remaining: 0` blocks until the window rolls.
    pub(crate) fn observe(&mut self, headers: &HeaderMap, now: Instant) {
        let num =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        if let Some(max) = num("x-hubspot-ratelimit-max").filter(|m| *m > 0) {
            self.max = u32::try_from(max).unwrap_or(u32::MAX);
        }
        if let Some(ms) = num("x-hubspot-ratelimit-interval-milliseconds").filter(|m| *m > 0) {
            self.window = Duration::from_millis(ms);
        }
        if num("x-hubspot-ratelimit-remaining") == Some(0) {
            // The window rolls when our oldest request in it expires; if we know of none, wait
            // a whole window.
            let rolls = self
                .in_window(now)
                .next()
                .map_or(now + self.window, |t| *t + self.window);
            self.block_until(rolls.max(now + Duration::from_millis(1)));
        }
    }

    /// Blocks new requests for `d` from `now` (after a 429).
    pub(crate) fn block_for(&mut self, d: Duration, now: Instant) {
        self.block_until(now + d);
    }

    /// Blocks new requests until `until`; never shortens a longer block (a daily park).
    fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }
}

/// What the account's time zone is known to be.
#[derive(Debug)]
enum Zone {
    /// Not read yet, or the last read failed: read again from `next_try` on.
    Unread { next_try: Instant },
    /// Read: `None` when HubSpot named no zone we know.
    Read(Option<Tz>),
}

/// What every client of one HubSpot account in the process shares.
#[derive(Debug)]
pub(crate) struct Account {
    /// Base URL and credentials hash (no secret).
    key: String,
    burst: Mutex<RateLimiter>,
    search: Mutex<RateLimiter>,
    zone: Mutex<Zone>,
}

/// The slots one request took ([`Account::acquire`]).
#[derive(Debug)]
pub(crate) struct Slot {
    burst: Ticket,
    search: Option<Ticket>,
}

static ACCOUNTS: LazyLock<Mutex<HashMap<String, Weak<Account>>>> = LazyLock::new(Mutex::default);

/// The registry key of the account behind `base_url` and `auth`: the base URL and a SHA-256
/// prefix of the token (or OAuth client id and refresh token). When the secrets cannot be read
/// here, `fallback` (where they come from, e.g. a variable name) stands in for them.
pub(crate) fn account_key(base_url: &str, auth: Option<&Auth>, fallback: &str) -> String {
    let material = match auth {
        Some(Auth::Token(src)) => src.read().ok().map(|t| format!("token\0{t}")),
        Some(Auth::OAuth {
            client_id,
            refresh_token,
            ..
        }) => client_id
            .read()
            .and_then(|c| Ok(format!("oauth\0{c}\0{}", refresh_token.read()?)))
            .ok(),
        None => None,
    }
    .unwrap_or_else(|| format!("unread\0{fallback}"));
    let digest = hex::encode(Sha256::digest(material.as_bytes()));
    format!("{}#{}", base_url.trim_end_matches('/'), &digest[..16])
}

impl Account {
    fn new(key: String, burst: RateLimiter) -> Self {
        Account {
            key,
            burst: Mutex::new(burst),
            search: Mutex::new(RateLimiter::new(
                SEARCHES_PER_SECOND,
                Duration::from_secs(1),
            )),
            zone: Mutex::new(Zone::Unread {
                next_try: Instant::now(),
            }),
        }
    }

    /// The process's account of `key` ([`account_key`]), created on first use.
    pub(crate) fn shared(key: String) -> Arc<Account> {
        let mut all = ACCOUNTS.lock().expect("registry lock");
        if let Some(a) = all.get(&key).and_then(Weak::upgrade) {
            return a;
        }
        all.retain(|_, a| a.strong_count() > 0);
        let a = Arc::new(Account::new(key.clone(), RateLimiter::default()));
        tracing::debug!(account = %a.key, "HubSpot account limiters created");
        all.insert(key, Arc::downgrade(&a));
        a
    }

    /// An account of its own with `burst` as limiter and no time zone to read (tests that let
    /// the emulator answer 429).
    #[cfg(test)]
    pub(crate) fn detached(burst: RateLimiter) -> Arc<Account> {
        let a = Account::new("detached".into(), burst);
        a.set_zone(None);
        Arc::new(a)
    }

    /// Waits for a slot in the burst window (and, for a search, first in the search window)
    /// and takes it.
    pub(crate) async fn acquire(&self, search: bool) -> Slot {
        let search = if search {
            Some(take(&self.search).await)
        } else {
            None
        };
        Slot {
            burst: take(&self.burst).await,
            search,
        }
    }

    /// The request of `slot` was answered at `now` with `headers`.
    pub(crate) fn answered(&self, slot: Slot, headers: &HeaderMap, now: Instant) {
        let mut burst = self.burst.lock().expect("limiter lock");
        burst.answered(slot.burst, now);
        burst.observe(headers, now);
        drop(burst);
        if let Some(t) = slot.search {
            self.search.lock().expect("limiter lock").answered(t, now);
        }
    }

    /// How long until the burst window has a free slot.
    pub(crate) fn wait_needed(&self, now: Instant) -> Option<Duration> {
        self.burst.lock().expect("limiter lock").wait_needed(now)
    }

    /// Blocks every client of the account for `d` from `now`.
    pub(crate) fn block_for(&self, d: Duration, now: Instant) {
        self.burst.lock().expect("limiter lock").block_for(d, now);
    }

    /// Whether the caller should read the account's time zone now; when true, the next read
    /// is due [`PROBE_EVERY`] later unless [`Account::set_zone`] records an answer.
    pub(crate) fn zone_read_due(&self, now: Instant) -> bool {
        let mut zone = self.zone.lock().expect("zone lock");
        match &mut *zone {
            Zone::Unread { next_try } if *next_try <= now => {
                *next_try = now + PROBE_EVERY;
                true
            }
            _ => false,
        }
    }

    /// Records HubSpot's answer about the zone: `None` when it named none we know.
    pub(crate) fn set_zone(&self, tz: Option<Tz>) {
        *self.zone.lock().expect("zone lock") = Zone::Read(tz);
    }

    /// How long to park after a `DAILY` 429 at `now` (see the module invariants).
    pub(crate) fn daily_wait(&self, now: DateTime<Utc>) -> Duration {
        match &*self.zone.lock().expect("zone lock") {
            Zone::Read(Some(tz)) => (daily_reset(now, *tz) - now)
                .to_std()
                .unwrap_or(RESET_GRACE),
            _ => PROBE_EVERY,
        }
    }
}

/// Waits for a slot of `limiter` and takes it.
async fn take(limiter: &Mutex<RateLimiter>) -> Ticket {
    loop {
        let wait = {
            let mut l = limiter.lock().expect("limiter lock");
            let now = Instant::now();
            match l.wait_needed(now) {
                Some(d) => d,
                None => return l.record(now),
            }
        };
        tracing::debug!(wait_ms = wait.as_millis() as u64, "client-side rate limit");
        tokio::time::sleep(wait).await;
    }
}

/// The time zone a `GET /account-info/v3/details` answer names (`timeZone`, an IANA name such
/// as `US/Eastern`), if we know it.
pub(crate) fn parse_zone(details: &serde_json::Value) -> Option<Tz> {
    details["timeZone"].as_str()?.parse().ok()
}

/// When HubSpot's daily limit, found exhausted at `now`, resets for an account in `tz`: the
/// next midnight in `tz`, plus [`RESET_GRACE`]. Within the grace after a midnight (HubSpot's
/// clock a little behind ours), that midnight plus the grace.
pub(crate) fn daily_reset(now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let grace = chrono::Duration::from_std(RESET_GRACE).expect("small");
    let today = (now - grace).with_timezone(&tz).date_naive();
    let tomorrow = today.succ_opt().unwrap_or(today);
    local_midnight(tomorrow, tz) + grace
}

/// The first instant of `day` in `tz` (midnight, or the end of a DST gap that skips it).
fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight");
    (0..=180)
        .find_map(|m| {
            tz.from_local_datetime(&(start + chrono::Duration::minutes(m)))
                .earliest()
        })
        .map_or_else(|| start.and_utc(), |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_daily_limit_resets_at_midnight_in_the_accounts_zone() {
        let eastern: Tz = "US/Eastern".parse().unwrap();
        // 23:30 UTC on 4 Dec is 18:30 in New York (EST, UTC-5): the reset is 05:00 UTC on 5 Dec.
        assert_eq!(
            daily_reset(utc("2026-12-04T23:30:00Z"), eastern),
            utc("2026-12-05T05:01:00Z")
        );
        // 01:00 UTC on 5 Dec is still 4 Dec in New York: the same reset, not UTC midnight.
        assert_eq!(
            daily_reset(utc("2026-12-05T01:00:00Z"), eastern),
            utc("2026-12-05T05:01:00Z")
        );
        // Summer time (EDT, UTC-4).
        assert_eq!(
            daily_reset(utc("2026-07-01T12:00:00Z"), eastern),
            utc("2026-07-02T04:01:00Z")
        );
        // Just after midnight (within the grace): that midnight, not a day later.
        assert_eq!(
            daily_reset(utc("2026-12-05T05:00:30Z"), eastern),
            utc("2026-12-05T05:01:00Z")
        );
        assert_eq!(
            daily_reset(utc("2026-12-05T05:02:00Z"), eastern),
            utc("2026-12-06T05:01:00Z")
        );
        // East of UTC.
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(
            daily_reset(utc("2026-12-04T16:00:00Z"), tokyo),
            utc("2026-12-05T15:01:00Z")
        );
        // A zone whose DST starts at midnight (Santiago, 6 Sep 2026: 00:00 becomes 01:00).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        assert_eq!(
            daily_reset(utc("2026-09-05T12:00:00Z"), santiago),
            utc("2026-09-06T04:01:00Z")
        );
        assert_eq!(
            daily_reset(utc("2026-12-04T12:00:00Z"), Tz::UTC),
            utc("2026-12-05T00:01:00Z")
        );
    }

    #[test]
    fn the_park_after_a_daily_429_follows_the_zone_or_probes_hourly() {
        let now = utc("2026-12-04T23:30:00Z");
        let a = Account::new("t".into(), RateLimiter::default());
        // Unknown zone: probe in an hour, never "until UTC midnight".
        assert_eq!(a.daily_wait(now), PROBE_EVERY);
        let t0 = Instant::now();
        assert!(a.zone_read_due(t0), "the first request reads the zone");
        assert!(!a.zone_read_due(t0), "once per probe interval");
        assert!(
            a.zone_read_due(t0 + PROBE_EVERY),
            "a failed read is retried hourly"
        );
        a.set_zone(parse_zone(&serde_json::json!({"timeZone": "US/Eastern"})));
        assert!(!a.zone_read_due(t0 + 2 * PROBE_EVERY), "read once");
        assert_eq!(
            a.daily_wait(now),
            Duration::from_secs(5 * 3600 + 30 * 60 + 60)
        );
        // A zone HubSpot names that we do not know: probe hourly.
        a.set_zone(parse_zone(&serde_json::json!({"timeZone": "Mars/Olympus"})));
        assert_eq!(a.daily_wait(now), PROBE_EVERY);
    }

    #[test]
    fn one_account_per_base_url_and_credentials_without_the_secret() {
        let auth = |var: &str| Auth::Token(crate::config::SecretSource::Env(var.into()));
        let a = account_key("http://h/", Some(&auth("DRIFTLESS_TEST_NO_SUCH_VAR")), "X");
        let b = account_key("http://h", Some(&auth("DRIFTLESS_TEST_NO_SUCH_VAR")), "X");
        assert_eq!(a, b);
        assert!(a.starts_with("http://h#") && !a.contains('X'), "{a}");
        assert_ne!(a, account_key("http://h", None, "Y"));
        assert_ne!(a, account_key("http://other", None, "X"));
        let one = Account::shared(a.clone());
        let two = Account::shared(a.clone());
        assert!(Arc::ptr_eq(&one, &two));
        assert!(!Arc::ptr_eq(&one, &Account::shared(format!("{a}-other"))));
    }

    #[test]
    fn concurrent_clients_answered_out_of_order_keep_the_window_sorted() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = RateLimiter::new(2, Duration::from_secs(10));
        let first = l.record(t0);
        let second = l.record(t0 + ms(10));
        // The second request is answered first, the first one much later.
        l.answered(second, t0 + ms(20));
        l.answered(first, t0 + ms(500));
        // The oldest stamp is the second request's answer (20 ms): a slot frees at 10.02 s.
        assert_eq!(l.wait_needed(t0 + ms(10_019)), Some(ms(1)));
        assert_eq!(l.wait_needed(t0 + ms(10_020)), None);
    }
}
