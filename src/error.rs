//! Error classes shared by every boundary.
//!
//! Each module defines its own `thiserror` enum and classifies it once, here, through
//! [`Classify`]: *transient* errors are retried with backoff from the last acknowledged
//! position, *poison* records go to a dead-letter destination, *fatal* errors stop the process
//! with a message and a hint. The rest of the code matches only on the class. `Backoff` is
//! the one retry schedule for transient errors; [`LastError`] is how an error is recorded for
//! `driftless status`.

/// How the caller must react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff; nothing was acknowledged past the last durable point.
    Transient,
    /// The record itself is bad: park it (dead letter) and continue.
    Poison,
    /// Stop with a non-zero exit, a clear message and a hint; nothing is advanced.
    Fatal,
}

impl ErrorClass {
    /// The class's name as records and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Poison => "poison",
            ErrorClass::Fatal => "fatal",
        }
    }
}

/// An error as recorded for `driftless status` (capture's last error, a sink worker's). Error
/// texts and hints never carry row values, CRM values or secrets, so neither does this.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LastError {
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// [`ErrorClass::name`].
    pub class: String,
    /// The error (for a dead-lettered record: its category).
    pub message: String,
    /// What to do, if known.
    pub hint: Option<String>,
}

impl LastError {
    /// An error of `class` happening now.
    pub(crate) fn now(class: ErrorClass, message: String, hint: Option<String>) -> LastError {
        LastError {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            class: class.name().to_string(),
            message,
            hint,
        }
    }
}

/// Implemented by every boundary error type.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
    /// An operator-facing hint (what to do about it), if there is one.
    fn hint(&self) -> Option<String> {
        None
    }
    /// Why the process refused to go on, if it did (the exit code depends on it).
    fn refusal(&self) -> Option<Refusal> {
        None
    }
}

/// A deliberate refusal, as opposed to a failure: the process stops because going on would be
/// wrong, not because something broke. Mapped to exit codes in one place (`app::exit_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The config (or the destination's schema) does not fit: exit code 2.
    Config,
    /// The source's state (slot, checkpoint, server settings, table shape): exit code 3.
    SourceState,
}

/// Exponential backoff with equal jitter (half fixed, half random): 250 ms doubling to 30 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const FIRST_MS: u64 = 250;
    const MAX_MS: u64 = 30_000;

    /// A fresh schedule.
    pub(crate) fn new() -> Self {
        Backoff {
            next_ms: Self::FIRST_MS,
        }
    }

    /// The next wait.
    pub(crate) fn next_wait(&mut self) -> std::time::Duration {
        let cap = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(Self::MAX_MS);
        std::time::Duration::from_millis(cap / 2 + rand::random_range(0..=cap / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_inside_bounds() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..10).map(|_| b.next_wait().as_millis()).collect();
        assert!((125..=250).contains(&waits[0]), "{waits:?}");
        assert!((250..=500).contains(&waits[1]), "{waits:?}");
        assert!(waits[9] >= 15_000 && waits[9] <= 30_000, "{waits:?}");
    }
}
