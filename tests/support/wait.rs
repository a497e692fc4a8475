//! Waiting in tests: for a condition ([`eventually`]), or for a sentinel ([`sentinel`]).
//!
//! "Nothing happened" is never proven by sleeping and then asserting absence. A test makes a
//! sentinel change ordered after the event whose effect must not happen (the same key, so the
//! same Kafka partition or the same notification queue), waits until the sentinel's effect
//! arrives, and only then asserts the absence: whatever the earlier event caused is in by then.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for something that must happen.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Waits until `cond` or panics with `what`.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Makes the sentinel change (`change`) and waits until `arrived` sees it (panics with `what`
/// after [`WAIT`]); the caller then asserts that nothing else happened.
pub(crate) async fn sentinel<F, Fut>(what: &str, change: impl Future<Output = ()>, arrived: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    change.await;
    eventually(what, WAIT, arrived).await;
}
