//! Error classes shared by every boundary.
//!
//! Each module defines its own `thiserror` enum and classifies it once, here, through
//! [`Classify`]: *transient* errors are retried with backoff from the last acknowledged
//! position, *poison* records go to a dead-letter destination, *fatal* errors stop the process
//! with a message and a hint. The rest of the code matches only on the class.

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

/// Implemented by every boundary error type.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
    /// An operator-facing hint (what to do about it), if there is one.
    fn hint(&self) -> Option<String> {
        None
    }
}
