//! Driftless's own tables (the sink ledger, the two-way ledger and inbox), created on first use.
//!
//! `CREATE ... IF NOT EXISTS` is not safe against a concurrent create of the same object: the
//! loser fails on a catalog's unique index (23505) or with "already exists" (42P07). Sink
//! workers of one sink start together on many machines, so every such batch here runs in one
//! transaction that first takes the same advisory lock: the second worker waits for the first
//! one's commit, then finds everything in place. Invariant: every statement of a batch is
//! idempotent, and nothing else takes this lock.

use tokio_postgres::Client;

/// The advisory lock key every driftless DDL batch takes (`hashtext('driftless.ddl')` would do
/// as well; a constant needs no round trip to compute).
const DDL_LOCK: i64 = 0x6472_6966_746c_6573; // "driftles"

/// Runs the idempotent statements of `ddl` (simple-query text, no parameters) under the DDL
/// lock. One simple query is one implicit transaction: the lock is held until the last
/// statement commits, and a failure rolls everything back and leaves the session clean.
pub(crate) async fn create_if_missing(
    client: &Client,
    ddl: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SELECT pg_advisory_xact_lock({DDL_LOCK}); {ddl}"))
        .await
}
