//! Reconciliation: the safety net for lost or reordered notifications.
//!
//! Owns the loop that asks the CRM for records modified (and, with `on_crm_delete =
//! "delete"`, deleted) in a window and commits their ids to the inbox for the inbound worker.
//! Invariants:
//! - a window starts at the durable cursor and ends `reconcile_lag` before the pass began, so
//!   a change a lagging search index does not show yet is younger than the window's end and
//!   falls into a later window; windows follow each other without gap or overlap;
//! - the cursor moves to the window's end only after every id of the window is committed to
//!   the inbox, so a kill (or a failed page) re-reads the whole window next time, never less;
//! - a transient failure waits for the next pass; a fatal one (401, 403, a table unfit for
//!   two-way sync) ends the loop with the error, which stops the sink's worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::sink::SinkError;
use crate::sync::inbox::CursorKind;

use crate::sync::engine::*;

/// Every `every`, lists the records modified (and, with `on_crm_delete = "delete"`, deleted)
/// since the cursors into the inbox.
pub(crate) async fn run<C: Crm>(
    ctx: Arc<Context>,
    mut crm: C,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile_once(&ctx, &mut crm, &shutdown).await {
            Ok(n) => tracing::info!(sink = %ctx.sink, records = n, "reconciliation pass done"),
            Err(e @ SinkError::Fatal { .. }) => return Err(e),
            Err(e) => {
                ctx.status.error(&e);
                tracing::warn!(sink = %ctx.sink, error = %e,
                    "reconciliation pass failed; retrying at the next pass");
            }
        }
    }
}

/// One reconciliation pass from the durable cursors; returns the number of ids queued.
async fn reconcile_once<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    shutdown: &watch::Receiver<bool>,
) -> Result<usize, SinkError> {
    let lag_ms = i64::try_from(ctx.two_way.reconcile_lag.as_millis()).unwrap_or(i64::MAX);
    let until_ms = chrono::Utc::now().timestamp_millis().saturating_sub(lag_ms);
    let mut queued = 0;
    for &kind in CursorKind::in_use(&ctx.two_way) {
        let from_ms = ctx
            .inbox
            .cursor(kind)
            .await
            .map_err(store_failed)?
            .unwrap_or(0);
        if from_ms >= until_ms {
            continue;
        }
        let mut listing = Listing::new(ctx, kind, (from_ms, until_ms), shutdown);
        match kind {
            CursorKind::Modified => crm.list_modified(&mut listing).await?,
            CursorKind::Deleted => crm.list_deleted(&mut listing).await?,
        }
        queued += listing.queued();
        if *shutdown.borrow() {
            // The window may be incomplete: keep the cursor.
            return Ok(queued);
        }
        ctx.inbox
            .save_cursor(kind, until_ms)
            .await
            .map_err(store_failed)?;
    }
    Ok(queued)
}
