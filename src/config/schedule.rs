//! Sink schedules: when a scheduled sink applies what it accumulated.
//!
//! Owns the pure parsing and "next run" arithmetic of `schedule = "..."`.
//! A sink without a schedule is real time (batches close by size and `batch_max_wait_ms`). With
//! a schedule, the worker keeps consuming and coalescing per key, and applies the accumulated
//! latest states at each tick, saving API calls for keys changed many times in a window.
//!
//! Forms:
//! - `every <n><unit>` with unit `s`, `m`, `h` or `d` (e.g. `every 15m`): ticks are aligned to
//!   multiples of the interval since the Unix epoch, in UTC, so every worker of a group (and
//!   every restart) agrees on the windows;
//! - a 5- or 6-field cron expression (`*/15 * * * *`, `0 2 * * MON-FRI`), evaluated in UTC.
//!
//! Invariant: `next_after(t) > t`, always.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Aligned fixed interval.
    Every(Duration),
    /// Cron expression (UTC).
    Cron(Box<croner::Cron>),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron(a), Schedule::Cron(b)) => {
                a.pattern.to_string() == b.pattern.to_string()
            }
            _ => false,
        }
    }
}

/// Shortest interval accepted: below this a schedule saves nothing over real time.
const MIN_INTERVAL: Duration = Duration::from_secs(10);

impl Schedule {
    /// Parses `every 15m` or a cron expression; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("every ") {
            let rest = rest.trim();
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (n, unit) = rest.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{text:?}: expected `every <number><s|m|h|d>`"))?;
            let unit_s = match unit.trim() {
                "s" => 1,
                "m" => 60,
                "h" => 3_600,
                "d" => 86_400,
                _ => return Err(format!("{text:?}: the unit must be one of s, m, h, d")),
            };
            let every = Duration::from_secs(n.saturating_mul(unit_s));
            if every < MIN_INTERVAL {
                return Err(format!("{text:?}: the interval must be at least 10s"));
            }
            return Ok(Schedule::Every(every));
        }
        croner::Cron::from_str(text)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| {
                format!("{text:?} is neither `every <n><s|m|h|d>` nor a cron expression: {e}")
            })
    }

    /// The first tick strictly after `now`.
    pub(crate) fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(every) => {
                let every_ms = every.as_millis().max(1) as i64;
                let now_ms = now.timestamp_millis();
                let next_ms = (now_ms.div_euclid(every_ms) + 1) * every_ms;
                DateTime::from_timestamp_millis(next_ms).unwrap_or(now + TimeDelta::days(1))
            }
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&now, false)
                .ok()
                .filter(|t| *t > now)
                // A pattern with no future match (e.g. 30 February) runs daily rather than never.
                .unwrap_or(now + TimeDelta::days(1)),
        }
    }

    /// How long from `now` until the next tick.
    pub(crate) fn wait_from(&self, now: DateTime<Utc>) -> Duration {
        (self.next_after(now) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn every_is_aligned_to_the_epoch_in_utc() {
        let s = Schedule::parse("every 15m").unwrap();
        assert_eq!(s, Schedule::Every(Duration::from_secs(900)));
        assert_eq!(
            s.next_after(at("2026-11-27T10:07:12Z")),
            at("2026-11-27T10:15:00Z")
        );
        // Exactly on a tick: the next one.
        assert_eq!(
            s.next_after(at("2026-11-27T10:15:00Z")),
            at("2026-11-27T10:30:00Z")
        );
        assert_eq!(
            Schedule::parse("every 1d")
                .unwrap()
                .next_after(at("2026-11-27T23:59:59Z")),
            at("2026-11-28T00:00:00Z")
        );
    }

    #[test]
    fn cron_expressions_run_in_utc() {
        let s = Schedule::parse("0 2 * * MON-FRI").unwrap();
        // 2026-11-27 is a Friday; the next weekday 02:00 after Friday 10:00 is Monday.
        assert_eq!(
            s.next_after(at("2026-11-27T10:00:00Z")),
            at("2026-11-30T02:00:00Z")
        );
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.wait_from(at("2026-11-27T10:14:00Z")),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, needle) in [
            ("every", "cron"),
            ("every 15", "unit"),
            ("every 15w", "unit"),
            ("every m", "every <number>"),
            ("every 5s", "at least 10s"),
            ("61 * * * *", "cron"),
            ("hourly-ish", "cron"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn next_is_always_later() {
        let s = Schedule::parse("every 10s").unwrap();
        let mut t = at("2026-01-01T00:00:00Z");
        for _ in 0..1000 {
            let n = s.next_after(t);
            assert!(n > t);
            assert!(n - t <= TimeDelta::seconds(10));
            t = n;
        }
    }
}
