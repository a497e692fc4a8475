//! Reconciliation: the safety net for lost or reordered notifications.
//!
//! Owns the loop that asks the CRM for records modified (and, with `on_crm_delete =
//! "delete"`, deleted) since durable cursors and queues them for the inbound worker.
//! Invariants: a transient failure waits for the next pass; a fatal one (401, 403, a table
//! unfit for two-way sync) ends the loop with the error, which stops the sink's worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::two_way::OnCrmDelete;
use crate::sink::SinkError;
use crate::sync::store::CursorKind;

use crate::sync::engine::*;

/// Searches for records modified (and, with `on_crm_delete = "delete"`, deleted) since the
/// cursors every `every` and queues them for the inbound worker.
pub(crate) async fn run<C: Crm>(
    ctx: Arc<Context>,
    mut crm: C,
    queue: mpsc::Sender<Inbound>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile_once(&ctx, &mut crm, &queue, &shutdown).await {
            Ok(n) => tracing::info!(sink = %ctx.sink, records = n, "reconciliation pass done"),
            Err(e @ SinkError::Fatal { .. }) => return Err(e),
            Err(e) => tracing::warn!(sink = %ctx.sink, error = %e,
                "reconciliation pass failed; retrying at the next pass"),
        }
    }
}

/// One reconciliation pass from the durable cursors; returns the number of records queued.
async fn reconcile_once<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    queue: &mpsc::Sender<Inbound>,
    shutdown: &watch::Receiver<bool>,
) -> Result<usize, SinkError> {
    let mut kinds = vec![CursorKind::Modified];
    if ctx.two_way.on_crm_delete == OnCrmDelete::Delete {
        kinds.push(CursorKind::Deleted);
    }
    let mut queued = 0;
    for kind in kinds {
        let (since_ms, _) = ctx
            .store
            .lock()
            .await
            .cursor(kind)
            .await
            .map_err(store_failed)?
            .unwrap_or((0, String::new()));
        let mut listing = Listing::new(ctx, kind, since_ms, queue, shutdown);
        match kind {
            CursorKind::Modified => crm.list_modified(&mut listing).await?,
            CursorKind::Deleted => crm.list_deleted(&mut listing).await?,
        }
        let newest_ms = listing.newest_ms;
        queued += listing.queued();
        if *shutdown.borrow() {
            return Ok(queued);
        }
        ctx.store
            .lock()
            .await
            .save_cursor(kind, newest_ms, "")
            .await
            .map_err(store_failed)?;
    }
    Ok(queued)
}
